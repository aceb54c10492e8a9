-- common: helpers a script is prefixed with when it names them (see
-- store::scripts::with_helpers: a top-level `local` each).
-- Only definitions: nothing here runs or touches a key by itself.

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

-- A sale's shoppers (fs:{sale}:shoppers) are one hash of shopper ->
-- 'units order_id order_id ...': the units the shopper holds (reserved or
-- paid), then every order they had in the sale, oldest first. One field
-- per shopper, so reserve.lua finds both in one lookup. The entry stays
-- when the units drop to 0 (the orders are still theirs); the sale's stats
-- count `buyers`, the shoppers holding units.
--
-- Takes qty units off a shopper's entry in the sale's shoppers hash, and
-- off the sale's buyers when they held some and hold none after it.
local function unhold_shopper(shoppers, stats, shopper, qty)
  local entry = redis.call('HGET', shoppers, shopper)
  if not entry then
    return
  end
  local space = string.find(entry, ' ', 1, true) or #entry + 1
  local held = tonumber(string.sub(entry, 1, space - 1))
  local units = math.max(held - qty, 0)
  if held > 0 and units == 0 then
    redis.call('HINCRBY', stats, 'buyers', -1)
  end
  redis.call('HSET', shoppers, shopper, string.format('%d', units) .. string.sub(entry, space))
end

-- Puts an order's units back on sale and off the shopper's count (and,
-- for a campaign's sale, off the shopper's counts in the round and the
-- campaign: round_holds and holds, nil for an ordinary sale).
local function restock_units(stock, stats, shoppers, shopper, qty, round_holds, holds)
  redis.call('INCRBY', stock, qty)
  unhold_shopper(shoppers, stats, shopper, qty)
  if round_holds then
    unhold(round_holds, shopper, qty)
    unhold(holds, shopper, qty)
  end
end

-- Puts an unpaid order's units back on sale and off the shopper's counts
-- (see restock_units), and moves them from `reserved` to `counter`
-- (cancelled or expired).
local function release_units(stock, stats, shoppers, shopper, qty, counter, round_holds, holds)
  restock_units(stock, stats, shoppers, shopper, qty, round_holds, holds)
  redis.call('HINCRBY', stats, 'reserved', -qty)
  redis.call('HINCRBY', stats, counter, qty)
end

-- The outbox member of an order's refund call to WeChat Pay.
local function refund_call(order_id)
  return 'wechatpay.refund ' .. order_id
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
local function snapshot(sale_key, stock, stats)
  local sale = redis.call('HGETALL', sale_key)
  if #sale == 0 then
    return {}
  end
  local c = redis.call('HMGET', stats, 'reserved', 'paid', 'cancelled', 'expired',
    'refund_required', 'queued', 'refunded', 'restocked', 'buyers')
  return {
    now_ms(), sale, tonumber(redis.call('GET', stock) or '0'),
    tonumber(c[1] or '0'), tonumber(c[2] or '0'), tonumber(c[3] or '0'), tonumber(c[4] or '0'),
    tonumber(c[5] or '0'), tonumber(c[6] or '0'),
    tonumber(c[9] or '0'), tonumber(c[7] or '0'), tonumber(c[8] or '0')
  }
end

-- Orders: each order is one field of its sale's orders hash
-- (fs:{sale}:orders, field: the order id), a record of 'name=value' pairs
-- joined by single spaces. save_order writes them in the order of
-- ORDER_FIELDS; reserve.lua writes new records in that layout, ending
-- with the order's batch (see accept_orders.lua), so readers take the
-- fields in any order, but user_id always comes first. A record with
-- queued_at and no batch is one a build before batches marked taken. No value is empty
-- or holds a space: ids are printable ASCII without spaces (a transaction
-- id is checked for it before it is stored), the rest are numbers, a
-- currency code and a status. store::redis::codec reads it in Rust.
local ORDER_FIELDS = {'user_id', 'quantity', 'amount_cents', 'currency', 'status',
  'created_at', 'expires_at', 'batch', 'queued_at', 'paid_at', 'prepay_id', 'transaction_id',
  'refund', 'refund_settled_by_hand_at'}

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

-- The refusal of a merchant's change to a sale whose state is `state`
-- (false: no such sale) unless it is still scheduled; nil when it is.
local function not_scheduled(state)
  if not state then
    return {'not_found'}
  end
  if state ~= 'scheduled' then
    return {'conflict', 'the sale is ' .. state}
  end
  return nil
end

-- A sale's units off sale: reserved, paid, and refunded without restock
-- (SaleStats::taken).
local function taken_units(stats)
  local h = redis.call('HMGET', stats, 'reserved', 'paid', 'refunded', 'restocked')
  return tonumber(h[1] or '0') + tonumber(h[2] or '0') + tonumber(h[3] or '0')
    - tonumber(h[4] or '0')
end

-- A merchant's change to a sale (update_sale.lua, update_campaign.lua),
-- decided against the Redis clock `now`: first sale_change_refusal (no
-- write), then apply_sale_change. c: {version (the version the change was
-- computed from), restricted ('1': a field other than stock_total/ends_at
-- changes), end_now ('1': stop the sale now), total (new stock_total),
-- ends (new ends_at, ms), fields (field, value pairs of every other
-- field)}. Before the start any field may change; while live only
-- stock_total (never below the units off sale) and ends_at, or the
-- sale is stopped; once ended or cancelled nothing changes.
local function sale_change_refusal(sale_key, stats, c, now)
  local s = redis.call('HMGET', sale_key, 'state', 'starts_at', 'ends_at', 'version')
  local unchangeable = not_scheduled(s[1])
  if unchangeable then
    return unchangeable
  end
  if s[4] ~= c.version then
    return {'changed'}
  end
  local started = now >= tonumber(s[2])
  local ends_now = tonumber(s[3])
  if started and now >= ends_now then
    return {'conflict', 'the sale has ended'}
  end
  if started and c.restricted == '1' then
    return {'conflict', 'the sale has started: only stock_total, ends_at and status can change'}
  end
  local taken = taken_units(stats)
  if c.total < taken then
    return {'conflict', 'stock_total cannot go below the ' .. taken ..
      ' units reserved, paid or refunded without restock'}
  end
  if c.ends ~= ends_now and c.ends <= now then
    return {'conflict', 'ends_at must be in the future; set status to ended to stop now'}
  end
  return nil
end

-- Writes a change sale_change_refusal allowed.
local function apply_sale_change(sale_key, stock, stats, c, now)
  local taken = taken_units(stats)
  if c.restricted == '1' and #c.fields > 0 then
    redis.call('HSET', sale_key, unpack(c.fields))
  end
  local ends = c.ends
  if c.end_now == '1' then
    -- Stopped now: ends_at says when it ended (not before its start), so
    -- its payment window, and retention, count from then.
    ends = math.min(ends, math.max(now, tonumber(redis.call('HGET', sale_key, 'starts_at'))))
    redis.call('HSET', sale_key, 'state', 'ended')
  end
  redis.call('HSET', sale_key, 'stock_total', c.total, 'ends_at', ends)
  redis.call('HINCRBY', sale_key, 'version', 1)
  redis.call('SET', stock, c.total - taken)
end

-- Calling off a sale that has not started (cancel_sale.lua,
-- update_campaign.lua): the refusal at `now`, or nil; then
-- apply_sale_cancel.
local function sale_cancel_refusal(sale_key, now)
  local s = redis.call('HMGET', sale_key, 'state', 'starts_at')
  local unchangeable = not_scheduled(s[1])
  if unchangeable then
    return unchangeable
  end
  if now >= tonumber(s[2]) then
    return {'conflict', 'the sale has started and can no longer be cancelled; set status to ended instead'}
  end
  return nil
end

-- A sale that has not started has no orders, so its outbox (and its
-- attempts) holds at most a campaign round's reminder
-- (queue_reminder, below): called off, it sends none, and nothing is left
-- to hold the sale from retention.
local function apply_sale_cancel(sale_key, outbox, attempts)
  redis.call('HSET', sale_key, 'state', 'cancelled')
  redis.call('HINCRBY', sale_key, 'version', 1)
  redis.call('DEL', outbox, attempts)
end

-- A new sale, its metadata (`fields`: field, value pairs) and its stock,
-- at version 1 (create_sale.lua, update_campaign.lua); false when the id
-- already exists.
local function create_sale_record(sale_key, stock, total, fields)
  if redis.call('EXISTS', sale_key) == 1 then
    return false
  end
  redis.call('HSET', sale_key, 'version', 1, unpack(fields))
  redis.call('SET', stock, total)
  return true
end

-- Queues the 'campaign.round_starting' reminder in a scheduled sale's
-- outbox, due at `due` (ms; due at once when that is past), its attempts
-- from zero; one queued already moves to the new due time. A sale that has
-- started (Redis clock) or is no longer scheduled gets none, and one
-- queued before (its round moved to start sooner) goes. Returns whether it
-- was queued.
local function queue_reminder(sale_key, outbox, attempts, due)
  local s = redis.call('HMGET', sale_key, 'state', 'starts_at')
  if s[1] ~= 'scheduled' or now_ms() >= tonumber(s[2]) then
    redis.call('ZREM', outbox, 'campaign.round_starting')
    redis.call('HDEL', attempts, 'campaign.round_starting')
    return false
  end
  redis.call('ZADD', outbox, due, 'campaign.round_starting')
  redis.call('HDEL', attempts, 'campaign.round_starting')
  return true
end
