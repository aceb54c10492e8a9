-- delivered: the merchant acknowledged a hand-off; it leaves the outbox
-- together with its count of attempts. Only the attempt it leased: an
-- entry whose attempts moved on since (queued again, as a moved round's
-- reminder is, or leased again by another node once the lease ran out)
-- is left for that one.
-- KEYS[1] fs:{sale}:outbox    sorted set: 'event order_id' by due time (ms)
-- KEYS[2] fs:{sale}:attempts  hash: 'event order_id' -> attempts so far
-- ARGV[1] the hand-off, 'event order_id', ARGV[2] the attempt delivered
-- Returns 1 when it left the outbox, else 0.
if tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0') ~= tonumber(ARGV[2]) then
  return 0
end
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return removed
