-- common: helpers every script is prefixed with (see store::scripts).
-- Only functions: nothing here runs or touches a key by itself.

-- The Redis clock in milliseconds: the one clock of every engine node.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Takes qty units off a shopper's count in a hash of shopper -> units.
local function unhold(counts, shopper, qty)
  if redis.call('HINCRBY', counts, shopper, -qty) <= 0 then
    redis.call('HDEL', counts, shopper)
  end
end

-- Puts an order's units back on sale and off the shopper's count.
local function restock_units(stock, buyers, shopper, qty)
  redis.call('INCRBY', stock, qty)
  unhold(buyers, shopper, qty)
end

-- Puts an unpaid order's units back on sale and off the shopper's count
-- (and, for a campaign's sale, off the shopper's counts in the round and
-- the campaign: round_holds and holds, nil for an ordinary sale), and
-- moves them from `reserved` to `counter` (cancelled or expired).
local function release_units(stock, stats, buyers, shopper, qty, counter, round_holds, holds)
  restock_units(stock, buyers, shopper, qty)
  redis.call('HINCRBY', stats, 'reserved', -qty)
  redis.call('HINCRBY', stats, counter, qty)
  if round_holds then
    unhold(round_holds, shopper, qty)
    unhold(holds, shopper, qty)
  end
end

-- Queues a hand-off to the merchant's webhook, due now; the same event of
-- the same order is queued once.
local function hand_off(outbox, event, order_id, now)
  redis.call('ZADD', outbox, 'NX', now, event .. ' ' .. order_id)
end

-- A consumer group of a stream, as a table of its XINFO GROUPS fields
-- ('name', 'last-delivered-id', ...), or nil when the stream or the group
-- does not exist.
local function consumer_group(stream, name)
  if redis.call('EXISTS', stream) == 0 then
    return nil
  end
  for _, info in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local fields = {}
    for f = 1, #info, 2 do
      fields[info[f]] = info[f + 1]
    end
    if fields['name'] == name then
      return fields
    end
  end
  return nil
end

-- A sale and its exact counts (see sale_snapshot.lua for the keys and the
-- reply), or {} when the sale does not exist.
local function snapshot(sale_key, stock, stats, buyers)
  local sale = redis.call('HGETALL', sale_key)
  if #sale == 0 then
    return {}
  end
  local c = redis.call('HMGET', stats, 'reserved', 'paid', 'cancelled', 'expired',
    'refund_required', 'queued', 'refunded', 'restocked')
  return {
    now_ms(), sale, tonumber(redis.call('GET', stock) or '0'),
    tonumber(c[1] or '0'), tonumber(c[2] or '0'), tonumber(c[3] or '0'), tonumber(c[4] or '0'),
    tonumber(c[5] or '0'), tonumber(c[6] or '0'),
    redis.call('HLEN', buyers), tonumber(c[7] or '0'), tonumber(c[8] or '0')
  }
end

-- Orders: each order is one field of its sale's orders hash
-- (fs:{sale}:orders, field: the order id), a record of 'name=value' pairs
-- joined by single spaces, in the order of ORDER_FIELDS. No value is empty
-- or holds a space: ids are printable ASCII without spaces (a transaction
-- id is checked for it before it is stored), the rest are numbers, a
-- currency code and a status. store::redis::codec
-- reads it in Rust; reserve.lua writes new records in the same layout.
local ORDER_FIELDS = {'user_id', 'quantity', 'amount_cents', 'currency', 'status',
  'created_at', 'expires_at', 'queued_at', 'paid_at', 'prepay_id', 'transaction_id', 'refund'}

-- An order's record as a table of its fields, and as stored; nil when
-- there is none.
local function load_order(orders, id)
  local text = redis.call('HGET', orders, id)
  if not text then
    return nil
  end
  local order = {}
  for name, value in string.gmatch(text, '([%w_]+)=(%S+)') do
    order[name] = value
  end
  return order, text
end

-- Writes an order's record; returns it as written.
local function save_order(orders, id, order)
  local parts = {}
  for _, name in ipairs(ORDER_FIELDS) do
    if order[name] then
      parts[#parts + 1] = name .. '=' .. order[name]
    end
  end
  local text = table.concat(parts, ' ')
  redis.call('HSET', orders, id, text)
  return text
end

-- A queued sale's fields: 'state', 'starts_at', 'ends_at', 'admission_mode'
-- and then those named in `...`; nil and the reply to give when the sale
-- does not exist or has no waiting room.
local function queued_sale(sale_key, ...)
  local s = redis.call('HMGET', sale_key, 'state', 'starts_at', 'ends_at', 'admission_mode', ...)
  if not s[1] then
    return nil, {'not_found'}
  end
  if s[4] ~= 'queue' then
    return nil, {'not_queued'}
  end
  return s
end
