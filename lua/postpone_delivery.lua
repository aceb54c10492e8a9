-- postpone_delivery: an attempt of a hand-off failed; it is due again after
-- its backoff, counted from the Redis clock (the clock claim_deliveries.lua
-- compares due times with). A hand-off no longer queued (delivered
-- meanwhile) stays gone.
-- KEYS[1] fs:{sale}:outbox  sorted set: 'event order_id' by due time (ms)
-- ARGV[1] the hand-off, 'event order_id', ARGV[2] the backoff (ms)
-- Returns 1 when its due time moved, else 0.
return redis.call('ZADD', KEYS[1], 'XX', 'CH', now_ms() + tonumber(ARGV[2]), ARGV[1])
