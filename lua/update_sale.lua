-- update_sale: apply a merchant's change, deciding against the Redis clock
-- whether it is allowed now. The change was computed from the sale at
-- ARGV[1]'s version: if the sale moved on since, nothing is written (no lost
-- update). Before the start any field may change; while live only
-- stock_total (never below the units held or paid) and ends_at, or the sale
-- is stopped; once ended or cancelled nothing changes.
-- KEYS[1] fs:{sale}:sale   hash: the sale's fields
-- KEYS[2] fs:{sale}:stock  string: units remaining
-- KEYS[3] fs:{sale}:stats  hash: reserved, paid, ... (units)
-- ARGV[1] the version the change was computed from
-- ARGV[2] '1' when a field other than stock_total/ends_at changes
-- ARGV[3] '1' to stop the sale now (ends_at becomes now, or its start)
-- ARGV[4] new stock_total
-- ARGV[5] new ends_at (ms)
-- ARGV[6..] field, value pairs of every other field (written only before the start)
-- Returns {'ok'} | {'not_found'} | {'changed'} | {'conflict', reason}.
local s = redis.call('HMGET', KEYS[1], 'state', 'starts_at', 'ends_at', 'version')
if not s[1] then
  return {'not_found'}
end
if s[1] ~= 'scheduled' then
  return {'conflict', 'the sale is ' .. s[1]}
end
if s[4] ~= ARGV[1] then
  return {'changed'}
end
local now = now_ms()
local started = now >= tonumber(s[2])
local ends_now = tonumber(s[3])
if started and now >= ends_now then
  return {'conflict', 'the sale has ended'}
end
if started and ARGV[2] == '1' then
  return {'conflict', 'the sale has started: only stock_total, ends_at and status can change'}
end
local c = redis.call('HMGET', KEYS[3], 'reserved', 'paid')
local held = tonumber(c[1] or '0') + tonumber(c[2] or '0')
local total = tonumber(ARGV[4])
if total < held then
  return {'conflict', 'stock_total cannot go below the ' .. held .. ' units reserved or paid'}
end
local ends = tonumber(ARGV[5])
if ends ~= ends_now and ends <= now then
  return {'conflict', 'ends_at must be in the future; set status to ended to stop now'}
end
if ARGV[2] == '1' then
  redis.call('HSET', KEYS[1], unpack(ARGV, 6))
end
if ARGV[3] == '1' then
  -- Stopped now: ends_at says when it ended (not before its start), so
  -- its payment window, and retention, count from then.
  ends = math.min(ends, math.max(now, tonumber(s[2])))
end
redis.call('HSET', KEYS[1], 'stock_total', total, 'ends_at', ends)
redis.call('HINCRBY', KEYS[1], 'version', 1)
if ARGV[3] == '1' then
  redis.call('HSET', KEYS[1], 'state', 'ended')
end
redis.call('SET', KEYS[2], total - held)
return {'ok'}
