-- postpone_expiry: a held order whose WeChat Pay order could not be closed
-- (WeChat Pay unreachable) is looked at again ARGV[2] ms from now; it stays
-- pending, its units held, its own entry of the deadline index (made when
-- expire_orders.lua held it) moved. An order no longer pending, or with no
-- entry of its own, is left alone.
-- KEYS[1] fs:{sale}:orders     hash: order id -> record (see common.lua)
-- KEYS[2] fs:{sale}:deadlines  sorted set by due time: order ids (see expire_orders.lua)
-- ARGV[1] order id
-- ARGV[2] milliseconds from now
-- Returns 1 when postponed, else 0.
local order = load_order(KEYS[1], ARGV[1])
if not order or order.status ~= 'pending_payment' then
  return 0
end
return redis.call('ZADD', KEYS[2], 'XX', 'CH', now_ms() + tonumber(ARGV[2]), ARGV[1])
