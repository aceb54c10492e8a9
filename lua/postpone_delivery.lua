-- postpone_delivery: an attempt of a hand-off failed; it is due again after
-- its backoff, counted from the Redis clock (the clock claim_deliveries.lua
-- compares due times with). A hand-off no longer queued (delivered
-- meanwhile), or whose attempts moved on since (see delivered.lua), is
-- left as it is.
-- KEYS[1] fs:{sale}:outbox    sorted set: 'event order_id' by due time (ms)
-- KEYS[2] fs:{sale}:attempts  hash: 'event order_id' -> attempts so far
-- ARGV[1] the hand-off, 'event order_id', ARGV[2] the backoff (ms),
-- ARGV[3] the attempt that failed
-- Returns 1 when its due time moved, else 0.
if tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0') ~= tonumber(ARGV[3]) then
  return 0
end
return redis.call('ZADD', KEYS[1], 'XX', 'CH', now_ms() + tonumber(ARGV[2]), ARGV[1])
