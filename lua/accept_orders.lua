-- accept_orders: the order service took reservations from the sale's
-- stream. The first time for an order: stamp queued_at, count its units as
-- queued, and queue the hand-off to the merchant. A redelivered entry
-- changes nothing. Answers each order's shopper (redelivered ones too), for
-- the caller to list the sale among the shopper's sales: that index has no
-- sale's slot.
-- Lean, as reserve.lua: the records are read in one HMGET, the stamped
-- ones written back in one HSET (queued_at appended: a record's fields are
-- name=value pairs in any order, see common.lua), the queued units counted
-- in one HINCRBY and the hand-offs queued in one ZADD.
-- KEYS[1] fs:{sale}:stats   hash: queued, ... (units)
-- KEYS[2] fs:{sale}:outbox  sorted set: hand-offs to the merchant by due time
-- KEYS[3] fs:{sale}:orders  hash: order id -> record (see common.lua)
-- ARGV[1] '1' to queue hand-offs to the merchant's webhook, ARGV[1 + i] order ids
-- Returns two strings: the outcomes, one letter per order, in order: 'q'
-- queued (first time) | 'u' unchanged | 'n' not found; and the shoppers of
-- the orders found, each once, joined by spaces (a shopper id holds none).
-- Two strings rather than a value per order: Redis converts each value of a
-- reply, and the engine's client parses each.
-- Runs `command` with `head` (its key and options) then `args`, a slice
-- of `args` per call (Lua's unpack takes a few thousand values at most and
-- FLASHSALE_ORDER_BATCH goes to 10,000); appends the replies to `replies`
-- when given. The slice is even, so pairs stay whole.
local SLICE = 512
local function in_slices(command, head, args, replies)
  for first = 1, #args, SLICE do
    local call = {unpack(head)}
    for i = first, math.min(first + SLICE - 1, #args) do
      call[#call + 1] = args[i]
    end
    local reply = redis.call(command, unpack(call))
    if replies then
      for _, value in ipairs(reply) do
        replies[#replies + 1] = value
      end
    end
  end
end

local now = string.format('%d', now_ms())
local ids = {}
for i = 2, #ARGV do
  ids[i - 1] = ARGV[i]
end
local outcomes = {}
local shoppers, seen = {}, {}
local stamped, hand_offs, queued = {}, {}, 0
local records = {}
in_slices('HMGET', {KEYS[3]}, ids, records)
for i, id in ipairs(ids) do
  -- An id twice in one call: the second sees the first's stamp.
  local text = stamped[id] or records[i]
  if not text then
    outcomes[i] = 'n'
  else
    local shopper = string.match(text, '^user_id=(%S+)')
    if not seen[shopper] then
      seen[shopper] = true
      shoppers[#shoppers + 1] = shopper
    end
    if string.find(text, ' queued_at=', 1, true) then
      outcomes[i] = 'u'
    else
      stamped[id] = text .. ' queued_at=' .. now
      queued = queued + tonumber(string.match(text, ' quantity=(%d+)'))
      if ARGV[1] == '1' then
        hand_offs[#hand_offs + 1] = now
        hand_offs[#hand_offs + 1] = 'order.reserved ' .. id
      end
      outcomes[i] = 'q'
    end
  end
end
if next(stamped) then
  local fields = {}
  for id, text in pairs(stamped) do
    fields[#fields + 1] = id
    fields[#fields + 1] = text
  end
  in_slices('HSET', {KEYS[3]}, fields)
  redis.call('HINCRBY', KEYS[1], 'queued', queued)
  if #hand_offs > 0 then
    -- The same event of the same order is queued once (hand_off's NX).
    in_slices('ZADD', {KEYS[2], 'NX'}, hand_offs)
  end
end
return {table.concat(outcomes), table.concat(shoppers, ' ')}
