-- expire_order: expires one unpaid order past its expires_at (Redis clock)
-- after WeChat Pay closed it: its units go back on sale and off the
-- shopper's count (onto their expiries), and its own entry of the deadline index (a held
-- order's: see expire_orders.lua) goes, in one step. An order
-- no longer pending (paid meanwhile) is left as it is.
-- KEYS[1] fs:{sale}:stock      string: units remaining
-- KEYS[2] fs:{sale}:stats      hash: reserved, expired, ... (units), buyers
-- KEYS[3] fs:{sale}:shoppers  hash: shopper -> 'units order_ids' (see common.lua)
-- KEYS[4] fs:{sale}:deadlines  sorted set by due time: order ids (see expire_orders.lua)
-- KEYS[5] fs:{sale}:orders     hash: order id -> record (see common.lua)
-- KEYS[6] fs:{sale}:expiries   hash: shopper -> their orders expired
--                              unpaid (reserve.lua refuses them past its bound)
-- KEYS[7], KEYS[8] a campaign's sale only: fs:{campaign}:round:<n>:holds
-- and fs:{campaign}:holds (see reserve.lua)
-- ARGV[1] order id
-- Returns {'expired', record} | {'unchanged', record} (not pending, or
-- not yet past expires_at) | {'not_found'}.
local order, text = load_order(KEYS[5], ARGV[1])
if not order then
  return {'not_found'}
end
if order.status ~= 'pending_payment' or tonumber(order.expires_at) > now_ms() then
  return {'unchanged', text}
end
order.status = 'expired'
local record = save_order(KEYS[5], ARGV[1], order)
release_units(KEYS[1], KEYS[2], KEYS[3], order.user_id, tonumber(order.quantity), 'expired',
  KEYS[7], KEYS[8])
redis.call('HINCRBY', KEYS[6], order.user_id, 1)
redis.call('ZREM', KEYS[4], ARGV[1])
return {'expired', record}
