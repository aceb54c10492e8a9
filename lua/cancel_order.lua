-- cancel_order: a shopper cancels an unpaid order; its units go back on sale
-- and stop counting towards the shopper's limit.
-- KEYS[1] fs:{sale}:orders  hash: order id -> record (see common.lua)
-- KEYS[2] fs:{sale}:stock   string: units remaining
-- KEYS[3] fs:{sale}:stats   hash: reserved, paid, cancelled, expired (units)
-- KEYS[4] fs:{sale}:buyers  hash: shopper -> units held
-- KEYS[5] fs:{sale}:deadlines  sorted set: unpaid order ids by expires_at
-- ARGV[1] shopper id (must own the order), ARGV[2] order id
-- Returns {'cancelled', record} | {'not_found'} | {'conflict', status}.
local order = load_order(KEYS[1], ARGV[2])
if not order or order.user_id ~= ARGV[1] then
  return {'not_found'}
end
if order.status ~= 'pending_payment' then
  return {'conflict', order.status}
end
order.status = 'cancelled'
local record = save_order(KEYS[1], ARGV[2], order)
release_units(KEYS[2], KEYS[3], KEYS[4], ARGV[1], tonumber(order.quantity), 'cancelled')
redis.call('ZREM', KEYS[5], ARGV[2])
return {'cancelled', record}
