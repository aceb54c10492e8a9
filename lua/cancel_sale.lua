-- cancel_sale: call off a sale that has not started (Redis clock). A sale
-- that has not started has no orders, so its outbox holds at most a
-- campaign round's reminder (schedule_reminder.lua): called off, it sends
-- none, and nothing is left to hold the sale from retention.
-- KEYS[1] fs:{sale}:sale      hash: the sale's fields
-- KEYS[2] fs:{sale}:outbox    sorted set: entries by due time (ms)
-- KEYS[3] fs:{sale}:attempts  hash: entry -> attempts so far
-- Returns {'ok'} | {'not_found'} | {'conflict', reason}.
local s = redis.call('HMGET', KEYS[1], 'state', 'starts_at')
if not s[1] then
  return {'not_found'}
end
if s[1] ~= 'scheduled' then
  return {'conflict', 'the sale is ' .. s[1]}
end
local now = now_ms()
if now >= tonumber(s[2]) then
  return {'conflict', 'the sale has started and can no longer be cancelled; set status to ended instead'}
end
redis.call('HSET', KEYS[1], 'state', 'cancelled')
redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('DEL', KEYS[2], KEYS[3])
return {'ok'}
