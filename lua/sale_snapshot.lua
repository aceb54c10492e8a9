-- sale_snapshot: read a sale and its exact counts in one atomic step.
-- KEYS[1] fs:{sale}:sale    hash: the sale's fields
-- KEYS[2] fs:{sale}:stock   string: units remaining
-- KEYS[3] fs:{sale}:stats   hash: reserved, paid, cancelled, expired, refund_required, queued (units)
-- KEYS[4] fs:{sale}:buyers  hash: shopper -> units held (reserved or paid)
-- Returns {} when the sale does not exist, else
-- {now_ms, {field, value, ...}, remaining, reserved, paid, cancelled, expired,
--  refund_required, queued, buyers}.
local sale = redis.call('HGETALL', KEYS[1])
if #sale == 0 then
  return {}
end
local now = now_ms()
local c = redis.call('HMGET', KEYS[3], 'reserved', 'paid', 'cancelled', 'expired',
  'refund_required', 'queued')
return {
  now, sale, tonumber(redis.call('GET', KEYS[2]) or '0'),
  tonumber(c[1] or '0'), tonumber(c[2] or '0'), tonumber(c[3] or '0'), tonumber(c[4] or '0'),
  tonumber(c[5] or '0'), tonumber(c[6] or '0'),
  redis.call('HLEN', KEYS[4])
}
