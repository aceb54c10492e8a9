-- expire_orders: payment deadlines. Each named order still pending_payment
-- and past its expires_at (Redis clock) becomes expired in the same step
-- that puts its units back on sale and off the shopper's count. An order no
-- longer pending (paid, cancelled) just leaves the deadline index; a pending
-- one not yet due stays. A payment and an expiry of the same order are two
-- scripts: whichever runs first decides, the other sees the new status.
-- KEYS[1] fs:{sale}:stock      string: units remaining
-- KEYS[2] fs:{sale}:stats      hash: reserved, expired, ... (units)
-- KEYS[3] fs:{sale}:buyers     hash: shopper -> units held
-- KEYS[4] fs:{sale}:deadlines  sorted set: unpaid order ids by expires_at
-- KEYS[4 + i] fs:{sale}:order:<ARGV[i]>  hash: an order
-- ARGV[i] order ids
-- Returns {order_id, {field, value, ...}, ...}: every order this call expired.
local now = now_ms()
local expired = {}
for i, order_id in ipairs(ARGV) do
  local key = KEYS[4 + i]
  local o = redis.call('HMGET', key, 'user_id', 'quantity', 'status', 'expires_at')
  if o[3] ~= 'pending_payment' then
    redis.call('ZREM', KEYS[4], order_id)
  elseif tonumber(o[4]) <= now then
    redis.call('HSET', key, 'status', 'expired')
    release_units(KEYS[1], KEYS[2], KEYS[3], o[1], tonumber(o[2]), 'expired')
    redis.call('ZREM', KEYS[4], order_id)
    expired[#expired + 1] = order_id
    expired[#expired + 1] = redis.call('HGETALL', key)
  end
end
return expired
