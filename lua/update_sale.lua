-- update_sale: apply a merchant's change, deciding against the Redis clock
-- whether it is allowed now (see sale_change_refusal in common.lua). The
-- change was computed from the sale at ARGV[1]'s version: if the sale moved
-- on since, nothing is written (no lost update).
-- KEYS[1] fs:{sale}:sale   hash: the sale's fields
-- KEYS[2] fs:{sale}:stock  string: units remaining
-- KEYS[3] fs:{sale}:stats  hash: reserved, paid, ... (units)
-- KEYS[4..8] fs:{sale}:q:line, q:who, q:adm, q:exp, q:meta: the waiting
--          room, emptied when the sale is left open (see queue_join.lua)
-- ARGV[1] the version the change was computed from
-- ARGV[2] '1' when a field other than stock_total/ends_at changes
-- ARGV[3] '1' to stop the sale now (ends_at becomes now, or its start)
-- ARGV[4] new stock_total
-- ARGV[5] new ends_at (ms)
-- ARGV[6..] field, value pairs of every other field (written only before the start)
-- Returns {'ok'} | {'not_found'} | {'changed'} | {'conflict', reason}.
local c = {version = ARGV[1], restricted = ARGV[2], end_now = ARGV[3],
  total = tonumber(ARGV[4]), ends = tonumber(ARGV[5]), fields = {unpack(ARGV, 6)}}
local now = now_ms()
local refusal = sale_change_refusal(KEYS[1], KEYS[3], c, now)
if refusal then
  return refusal
end
apply_sale_change(KEYS[1], KEYS[2], KEYS[3], c, now)
-- A sale switched back to open (only before its start) keeps no line: a
-- switch to the waiting room again starts an empty one.
if redis.call('HGET', KEYS[1], 'admission_mode') ~= 'queue' then
  redis.call('DEL', KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8])
end
return {'ok'}
