-- accept_orders: the order service took entries from the sale's stream.
-- Each entry holds the orders of one reserve call, a batch, and they are
-- taken together: the first time, the batch's number joins the sale's
-- accepted batches (that is what marks its orders taken: each order's
-- record names its batch), its units count as queued, and each of its
-- orders' hand-off to the merchant is queued. A redelivered entry changes
-- nothing, nor does one no longer on the stream: entries leave it only
-- once acknowledged (ack_reservations.lua), after they were taken.
-- Lean: the work is per entry (one XRANGE, one SADD), not per order; only
-- the hand-offs, when there is a webhook, are per order (one ZADD per
-- entry).
-- KEYS[1] fs:{sale}:stats     hash: queued, ... (units)
-- KEYS[2] fs:{sale}:outbox    sorted set: hand-offs to the merchant by due time
-- KEYS[3] fs:{sale}:stream    stream: the reservations (see reserve.lua)
-- KEYS[4] fs:{sale}:accepted  set: the numbers of the batches taken
-- ARGV[1] '1' to queue hand-offs to the merchant's webhook, ARGV[1 + i]
-- entry ids
-- Returns the outcomes, one letter per entry, in order: 'q' queued (first
-- time) | 'u' unchanged (taken before) | 'n' not taken: written by a build
-- before batches (it names no batch), or unreadable (its units or its
-- orders missing or malformed: hand-edited or corrupt data). One string
-- rather than a value per entry: Redis converts each value of a reply, and
-- the engine's client parses each.
-- Every entry is read and checked before anything of it is written, and
-- nothing after a write can fail: Redis keeps a script's writes made
-- before an error, so an error after the SADD would leave the batch taken
-- but its units never counted.
local now = string.format('%d', now_ms())
local outcomes = {}
local queued = 0
for i = 2, #ARGV do
  local found = redis.call('XRANGE', KEYS[3], ARGV[i], ARGV[i])[1]
  local fields = {}
  if found then
    local values = found[2]
    for f = 1, #values, 2 do
      fields[values[f]] = values[f + 1]
    end
  end
  -- Units as reserve.lua writes them: a whole number, far below what
  -- HINCRBY could overflow on (a float, 'inf' or 'nan' would fail there).
  local units = fields.units and #fields.units <= 9
    and string.find(fields.units, '^%d+$') and tonumber(fields.units)
  if not found then
    outcomes[#outcomes + 1] = 'u'
  elseif not fields.batch or not units or not fields.order_ids
      or not string.find(fields.order_ids, '%S') then
    outcomes[#outcomes + 1] = 'n'
  elseif redis.call('SADD', KEYS[4], fields.batch) == 0 then
    outcomes[#outcomes + 1] = 'u'
  else
    outcomes[#outcomes + 1] = 'q'
    queued = queued + units
    if ARGV[1] == '1' then
      -- The same event of the same order is queued once (hand_off's NX).
      local hand_offs = {}
      for id in string.gmatch(fields.order_ids, '%S+') do
        hand_offs[#hand_offs + 1] = now
        hand_offs[#hand_offs + 1] = 'order.reserved ' .. id
      end
      redis.call('ZADD', KEYS[2], 'NX', unpack(hand_offs))
    end
  end
end
if queued > 0 then
  redis.call('HINCRBY', KEYS[1], 'queued', queued)
end
return table.concat(outcomes)
