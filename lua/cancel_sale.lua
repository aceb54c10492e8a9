-- cancel_sale: call off a sale that has not started (Redis clock).
-- KEYS[1] fs:{sale}:sale  hash: the sale's fields
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
return {'ok'}
