-- dead_letter: a hand-off failed for good (the merchant refused it for
-- good, or its last allowed attempt failed). It leaves the outbox, so it
-- is no work left for the order service, for the sale's dead letters, with
-- its count of attempts, the Redis time and the failure. A hand-off no
-- longer queued (delivered meanwhile), or whose attempts moved on since
-- (see delivered.lua), is left as it is.
-- KEYS[1] fs:{sale}:outbox        sorted set: 'event order_id' by due time (ms)
-- KEYS[2] fs:{sale}:attempts      hash: 'event order_id' -> attempts so far
-- KEYS[3] fs:{sale}:dead_letters  hash: 'event order_id' -> 'attempts at_ms status failure'
-- ARGV[1] the hand-off, 'event order_id', ARGV[2] the webhook's HTTP status
-- (0: it did not answer), ARGV[3] the failure, ARGV[4] the attempt that
-- failed
-- Returns 1 when it moved, else 0.
local attempts = redis.call('HGET', KEYS[2], ARGV[1]) or '0'
if tonumber(attempts) ~= tonumber(ARGV[4]) or redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then
  return 0
end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1],
  attempts .. ' ' .. string.format('%d', now_ms()) .. ' ' .. ARGV[2] .. ' ' .. ARGV[3])
return 1
