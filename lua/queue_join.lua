-- queue_join: a shopper joins a queued sale's waiting room, once. Before
-- the opening (Redis clock) the shopper stands in the pre-queue, scored 0
-- under the member '<shuffle key>:<shopper>', so at the opening the
-- pre-queue is in the ascending order of the shuffle keys (Redis orders
-- equal scores by member); from the opening on, first come, first served
-- behind it, scored by an arrival counter from 1 under '<seq>:<shopper>'.
-- Joining again keeps the same place. A sale is sold out to a joiner as
-- to a poll (queue_poll.lua): nothing remaining and nothing reserved
-- unpaid, which could still come back.
-- KEYS[1] fs:{sale}:sale   hash: the sale's fields
-- KEYS[2] fs:{sale}:stock  string: units remaining
-- KEYS[3] fs:{sale}:q:line sorted set: the line (see above)
-- KEYS[4] fs:{sale}:q:who  hash: shopper -> their member of the line
-- KEYS[5] fs:{sale}:q:meta hash: seq, cursor, granted, expired, tick_us
-- KEYS[6] fs:{sale}:stats  hash: reserved, paid, ... (units)
-- ARGV[1] shopper id
-- ARGV[2] the shopper's shuffle key (hex SHA-256 of seed ‖ shopper id)
-- ARGV[3] the most members the line may hold
-- Returns {'joined'} | {'not_found'} | {'not_queued'} | {'not_started'} |
--   {'ended'} | {'sold_out'} | {'full'}.
local s, refusal = queued_sale(KEYS[1], 'prequeue_opens_secs')
if not s then
  return refusal
end
local now = now_ms()
local starts_at = tonumber(s[2])
if s[1] ~= 'scheduled' or now >= tonumber(s[3]) then
  return {'ended'}
end
if now < starts_at - tonumber(s[5]) * 1000 then
  return {'not_started'}
end
if redis.call('HEXISTS', KEYS[4], ARGV[1]) == 1 then
  return {'joined'}
end
if tonumber(redis.call('GET', KEYS[2]) or '0') <= 0
    and tonumber(redis.call('HGET', KEYS[6], 'reserved') or '0') <= 0 then
  return {'sold_out'}
end
if redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[3]) then
  return {'full'}
end
local member
if now < starts_at then
  member = ARGV[2] .. ':' .. ARGV[1]
  redis.call('ZADD', KEYS[3], 0, member)
else
  local seq = redis.call('HINCRBY', KEYS[5], 'seq', 1)
  member = seq .. ':' .. ARGV[1]
  redis.call('ZADD', KEYS[3], seq, member)
end
redis.call('HSET', KEYS[4], ARGV[1], member)
return {'joined'}
