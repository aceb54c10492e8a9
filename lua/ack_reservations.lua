-- ack_reservations: the order service is done with these stream entries.
-- Acknowledges them, then trims off the stream every entry the group has
-- acknowledged: everything below the oldest entry still pending, or, when
-- none is pending, everything the group has been given. Trimming a prefix
-- drops whole stream nodes at once; deleting entry by entry (XDEL) was the
-- costliest command of the HTTP race after the reserve script. Entries
-- acknowledged above one still pending (another consumer's batch) stay on
-- the stream until that one is acknowledged too. Entries never delivered
-- are never trimmed.
-- KEYS[1] fs:{sale}:stream  stream: reservations for the order service
-- ARGV[1] the consumer group, ARGV[2..] entry ids
-- Returns the number of entries trimmed (0 when the stream or the group is
-- gone: the order service joins again and gets the entries redelivered).
local group = consumer_group(KEYS[1], ARGV[1])
if not group then
  return 0
end
-- In slices: Lua's stack holds about 8,000 values, and a pass may ack more.
for first = 2, #ARGV, 1000 do
  redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, first, math.min(first + 999, #ARGV)))
end
local pending = redis.call('XPENDING', KEYS[1], ARGV[1])
local below = pending[2]
if pending[1] == 0 then
  -- Everything up to and including the last delivered id: trim below the
  -- id right after it.
  local ms, seq = string.match(group['last-delivered-id'], '^(%d+)-(%d+)$')
  below = ms .. '-' .. string.format('%d', tonumber(seq) + 1)
end
return redis.call('XTRIM', KEYS[1], 'MINID', below)
