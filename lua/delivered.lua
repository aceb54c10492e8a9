-- delivered: the merchant acknowledged a hand-off; it leaves the outbox
-- together with its count of attempts.
-- KEYS[1] fs:{sale}:outbox    sorted set: 'event order_id' by due time (ms)
-- KEYS[2] fs:{sale}:attempts  hash: 'event order_id' -> attempts so far
-- ARGV[1] the hand-off, 'event order_id'
-- Returns 1 when it was still queued, 0 when it was gone already.
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return removed
