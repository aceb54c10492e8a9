-- cancel_order: a shopper cancels an unpaid order; its units go back on sale
-- and stop counting towards the shopper's limit.
-- KEYS[1] fs:{sale}:order:<order id>  hash: the order
-- KEYS[2] fs:{sale}:stock   string: units remaining
-- KEYS[3] fs:{sale}:stats   hash: reserved, paid, cancelled, expired (units)
-- KEYS[4] fs:{sale}:buyers  hash: shopper -> units held
-- KEYS[5] fs:{sale}:deadlines  sorted set: unpaid order ids by expires_at
-- ARGV[1] shopper id (must own the order), ARGV[2] order id
-- Returns {'cancelled', {field, value, ...}} | {'not_found'} | {'conflict', status}.
local o = redis.call('HMGET', KEYS[1], 'user_id', 'quantity', 'status')
if not o[1] or o[1] ~= ARGV[1] then
  return {'not_found'}
end
if o[3] ~= 'pending_payment' then
  return {'conflict', o[3]}
end
redis.call('HSET', KEYS[1], 'status', 'cancelled')
release_units(KEYS[2], KEYS[3], KEYS[4], ARGV[1], tonumber(o[2]), 'cancelled')
redis.call('ZREM', KEYS[5], ARGV[2])
return {'cancelled', redis.call('HGETALL', KEYS[1])}
