-- redrive_dead_letters: an operator sends the sale's dead letters again.
-- Each goes back into the outbox due now (Redis time), its attempts
-- counted from zero again; the dead letters are emptied.
-- KEYS[1] fs:{sale}:outbox        sorted set: 'event order_id' by due time (ms)
-- KEYS[2] fs:{sale}:attempts      hash: 'event order_id' -> attempts so far
-- KEYS[3] fs:{sale}:dead_letters  hash: 'event order_id' -> 'attempts at_ms status failure'
-- Returns how many moved.
local now = now_ms()
local dead = redis.call('HKEYS', KEYS[3])
for _, member in ipairs(dead) do
  redis.call('ZADD', KEYS[1], now, member)
  redis.call('HDEL', KEYS[2], member)
end
redis.call('DEL', KEYS[3])
return #dead
