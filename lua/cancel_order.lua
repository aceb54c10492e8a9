-- cancel_order: a shopper cancels an unpaid order; its units go back on sale
-- and stop counting towards the shopper's limit. A shopper may cancel at
-- most ARGV[3] orders of a sale (then reserve.lua refuses them too), which
-- bounds their order list in fs:{sale}:shoppers.
-- KEYS[1] fs:{sale}:orders  hash: order id -> record (see common.lua)
-- KEYS[2] fs:{sale}:stock   string: units remaining
-- KEYS[3] fs:{sale}:stats   hash: reserved, paid, cancelled, expired (units), buyers
-- KEYS[4] fs:{sale}:shoppers  hash: shopper -> 'units order_ids' (see common.lua)
-- KEYS[5] fs:{sale}:deadlines  sorted set by due time: order ids (see expire_orders.lua)
-- KEYS[6] fs:{sale}:cancels  hash: shopper -> orders cancelled
-- KEYS[7], KEYS[8] a campaign's sale only: fs:{campaign}:round:<n>:holds
-- and fs:{campaign}:holds (see reserve.lua)
-- ARGV[1] shopper id (must own the order), ARGV[2] order id, ARGV[3] the
-- most orders a shopper may cancel in one sale, ARGV[4] 'taken' when the
-- cancel was taken from the shopper's allowance already (take_cancel.lua)
-- and the order's WeChat Pay order closed: then ARGV[5] is the prepay id
-- closed ('' for none), and an order holding another (one recorded since)
-- is refused; else '' (counted here).
-- Returns {'cancelled', record} | {'not_found'} | {'conflict', status} |
-- {'cancels_exhausted', cancelled so far} | {'prepay_changed'}.
local order = load_order(KEYS[1], ARGV[2])
if not order or order.user_id ~= ARGV[1] then
  return {'not_found'}
end
if order.status ~= 'pending_payment' then
  return {'conflict', order.status}
end
if ARGV[4] == 'taken' then
  if (order.prepay_id or '') ~= ARGV[5] then
    return {'prepay_changed'}
  end
else
  local cancelled = tonumber(redis.call('HGET', KEYS[6], ARGV[1]) or '0')
  if cancelled >= tonumber(ARGV[3]) then
    return {'cancels_exhausted', cancelled}
  end
  redis.call('HINCRBY', KEYS[6], ARGV[1], 1)
end
order.status = 'cancelled'
local record = save_order(KEYS[1], ARGV[2], order)
release_units(KEYS[2], KEYS[3], KEYS[4], ARGV[1], tonumber(order.quantity), 'cancelled', KEYS[7],
  KEYS[8])
-- The order's own deadline entry, if it has one (see expire_orders.lua).
redis.call('ZREM', KEYS[5], ARGV[2])
return {'cancelled', record}
