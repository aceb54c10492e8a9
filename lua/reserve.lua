-- reserve: the hot path. One call takes a batch of reservations for one
-- sale (the inventory actor sends what queued while its previous call was
-- in flight), decided one after another in order, each exactly as if it
-- came alone. For each: recognise a resent call (the order already exists:
-- a client library retried after a dropped connection), replay an
-- idempotent retry, check the window (Redis clock), the purchase token, the
-- per-shopper limit (and the shopper's cancels and expiries: one who has
-- cancelled, or let expire, the most orders allowed reserves no more) and
-- the stock, then take the
-- stock, count the shopper, record the order and queue it on the sale's
-- stream for the order service. The orders one call makes share their
-- payment deadline and one entry of the deadline index (one ZADD member a
-- call: see expire_orders.lua). They are also a batch, numbered per sale (the stats' `batches` count): each record names its
-- batch, and the batch's stream entry carries what accept_orders.lua needs
-- to take the whole batch at once. Checks run in the order of
-- domain::check_reservation.
-- Lean: every command inside Lua costs a fixed overhead on top of its own
-- work, so what can be done once per call is: the sale's fields, the
-- clock, the stock, the shoppers' entries (units and order lists: one
-- field each, so one lookup) and the earlier orders of the idempotency
-- keys are read once (HMGET) into Lua tables,
-- decided there, and written back once at the end (DECRBY, HINCRBY, HSET,
-- one ZADD), the new orders' records too (one HSET: a field each in the sale's
-- orders hash, no key per order), and one stream entry carrying the ids of
-- every order the call made, the batch's number and its units (the
-- records are in the orders hash).
-- A resent call is recognised by its order id in the shopper's order list
-- (which keeps every order the shopper ever had in this sale).
-- KEYS[1] fs:{sale}:sale     hash: the sale's fields
-- KEYS[2] fs:{sale}:stock    string: units remaining
-- KEYS[3] fs:{sale}:stats    hash: reserved, paid, cancelled, expired (units),
--                            batches (the last batch's number), buyers
--                            (shoppers holding units)
-- KEYS[4] fs:{sale}:shoppers hash: shopper -> 'units order_id order_id ...':
--                            the units they hold (reserved or paid) and
--                            every order they had in the sale (see
--                            common.lua)
-- KEYS[5] fs:{sale}:idem     hash: shopper + key -> 'order_id quantity'
-- KEYS[6] fs:{sale}:stream   stream: reservations for the order service, an
--                            entry per call: 'order_ids' (space-separated),
--                            'batch', 'units'
-- KEYS[7] fs:{sale}:deadlines  sorted set by due time: one entry per call,
--                            the space-separated ids of the orders it made
--                            (see expire_orders.lua)
-- KEYS[8] fs:{sale}:ptokens   hash: purchase token id -> the order it bought
-- KEYS[9] fs:{sale}:orders    hash: order id -> record (see common.lua)
-- KEYS[10] fs:{sale}:cancels  hash: shopper -> orders cancelled (cancel_order.lua)
-- KEYS[11] fs:{sale}:expiries hash: shopper -> orders expired unpaid
--                            (expire_orders.lua, expire_order.lua)
-- KEYS[12] fs:{sale}:q:line  sorted set: a queued sale's line (queue_join.lua)
-- KEYS[13] fs:{sale}:q:exp   sorted set: admitted member -> expiry, until
--                            freed (queue_poll.lua): on a queued sale a
--                            purchase token buys only while it names a
--                            member still there, the request's shopper's
--                            ('purchase_token_lapsed' once a poll freed it)
-- A sale of a campaign (its keys tagged by the campaign) also has:
-- KEYS[14] fs:{campaign}:campaign  hash: round_limit, total_limit (0: none)
-- KEYS[15] fs:{campaign}:round:<n>:holds  hash: shopper -> units held in
--                            the sale's round, across its items
-- KEYS[16] fs:{campaign}:holds  hash: shopper -> units held in the campaign
-- and each reservation is checked against both limits right after the
-- sale's own per-user limit and the shopper's cancels and expiries
-- (round first): 'round_limit_exceeded',
-- 'campaign_limit_exceeded'. An ordinary sale pays one length check.
-- ARGV[1] the most orders a shopper may cancel in one sale; ARGV[2] the
-- most they may let expire; ARGV[3] the number of requests n; then three
-- per request i (from 1, at ARGV[3i + 1]): shopper id,
-- quantity, new order id; then three for each request that has an
-- idempotency key or a verified purchase token (most have neither, and
-- send nothing more: each argument costs Redis its parsing and its copy
-- into Lua): i, the idempotency field ('' when none), the token's id (''
-- when none).
-- Returns one flat array: the terms, the stock remaining after the whole
-- call, then each request's answer, in order. The terms are what every
-- order this call made shares: now_ms (created_at), expires_ms,
-- price_cents, currency. (A reservation's own remaining is the call's plus
-- the units of the reservations after it in the call.) A request's answer:
--   held (one integer, the shopper's units after it: reserved, the common
--     case, so it carries no outcome name)
--   'replay', order_id (an idempotent retry, or this very call resent)
--   'sold_out' | 'idempotency_mismatch' | 'not_found' | 'not_started' |
--   'ended' | 'purchase_token_required' | 'purchase_token_used' |
--   'purchase_token_lapsed' |
--   'limit_exceeded' | 'unpaid_limit_exceeded' | 'round_limit_exceeded' |
--   'campaign_limit_exceeded'
--     (the name alone)
-- Flat rather than a table per request: Redis converts every table of a
-- reply on its own (looking for 'err', 'ok' and the like in each); and
-- each item costs Redis and the engine's parser alike.
local m = redis.call('HMGET', KEYS[1], 'state', 'starts_at', 'ends_at', 'per_user_limit',
  'price_cents', 'payment_timeout_secs', 'currency', 'require_purchase_token', 'admission_mode')
local now = now_ms()
local stock = tonumber(redis.call('GET', KEYS[2]) or '0')
-- Locals: a global is a table lookup each time it is named.
local find, sub, argv = string.find, string.sub, ARGV
local cancels_max, expiries_max = tonumber(ARGV[1]), tonumber(ARGV[2])
local count = tonumber(ARGV[3])

-- Read once: each shopper's units, cancels, expiries and order list, each
-- key's earlier order.
local shoppers, keyed, idems, tokens = {}, {}, {}, {}
for i = 1, count do
  shoppers[i] = ARGV[i * 3 + 1]
end
for e = 4 + count * 3, #ARGV, 3 do
  local i = tonumber(ARGV[e])
  idems[i], tokens[i] = ARGV[e + 1], ARGV[e + 2]
  if ARGV[e + 1] ~= '' then
    keyed[#keyed + 1] = ARGV[e + 1]
  end
end
local held, orders, prior = {}, {}, {}
-- Shopper -> orders of the sale they cancelled, and let expire; nil when
-- the sale has no such key (most sales' races have neither), so a race
-- pays one EXISTS a call for both and nothing per reservation. When one
-- exists, each is asked again on its own: a missing key stays nil, not
-- a table of zeros, which a bound of 0 would read as every shopper over
-- it.
local cancelled, lapsed
local campaign = #KEYS > 13
local round_limit, total_limit, round_held, total_held
if campaign then
  local limits = redis.call('HMGET', KEYS[14], 'round_limit', 'total_limit')
  round_limit, total_limit = tonumber(limits[1]), tonumber(limits[2] or '0')
  round_held, total_held = {}, {}
end
if count > 0 then
  local h = redis.call('HMGET', KEYS[4], unpack(shoppers))
  local function counts(key)
    if redis.call('EXISTS', key) == 0 then
      return nil
    end
    local values, by_shopper = redis.call('HMGET', key, unpack(shoppers)), {}
    for j = 1, count do
      local value = values[j]
      by_shopper[shoppers[j]] = value and value + 0 or 0
    end
    return by_shopper
  end
  if redis.call('EXISTS', KEYS[10], KEYS[11]) > 0 then
    cancelled, lapsed = counts(KEYS[10]), counts(KEYS[11])
  end
  local rh, th
  if campaign then
    rh = redis.call('HMGET', KEYS[15], unpack(shoppers))
    th = redis.call('HMGET', KEYS[16], unpack(shoppers))
  end
  for j = 1, count do
    local shopper = shoppers[j]
    if held[shopper] == nil then
      -- `+ 0` parses once where tonumber parses twice; an absent count
      -- is not parsed at all. A shopper's entry is 'units ids...'.
      local entry = h[j]
      if entry then
        local space = find(entry, ' ', 1, true) or #entry + 1
        held[shopper] = sub(entry, 1, space - 1) + 0
        orders[shopper] = sub(entry, space + 1)
      else
        held[shopper], orders[shopper] = 0, ''
      end
      if campaign then
        round_held[shopper] = rh[j] and rh[j] + 0 or 0
        total_held[shopper] = th[j] and th[j] + 0 or 0
      end
    end
  end
end
if #keyed > 0 then
  local p = redis.call('HMGET', KEYS[5], unpack(keyed))
  for j, idem in ipairs(keyed) do
    if prior[idem] == nil then
      prior[idem] = p[j] or false
    end
  end
end

local taken = 0
-- What every reservation appends to keeps its count here: `#t` searches
-- the table each time. The lists of requests with an idempotency key still
-- use `#t` (`benches/redis_cost.sh` prices requests without one).
local changed_shoppers, changed_keys, made = {}, {}, {}
local changed_count, made_count, new_buyers = 0, 0, 0
-- Numbers handed to redis.call are formatted as floats each time: what is
-- the same for the whole call is formatted once here.
local now_text = string.format('%d', now)
local expires = now + tonumber(m[6] or '0') * 1000
-- Parsed once, not per reservation (nil when the sale does not exist).
local starts_at, ends_at = tonumber(m[2]), tonumber(m[3])
local per_user_limit, price = tonumber(m[4]), tonumber(m[5])
local expires_text = string.format('%d', expires)
local amounts = {}
-- A new order's record (common.lua's layout) ends the same for the call.
-- Its batch is numbered when the call makes its first order.
local record_end = ' currency=' .. (m[7] or '') .. ' status=pending_payment created_at=' .. now_text ..
  ' expires_at=' .. expires_text
local batch
local records, record_items = {}, 0

-- Per reservation, parsing a number (strtod) or handing one to redis.call
-- (formatted with printf) costs more than the rest of a check: each
-- quantity is parsed and each count formatted once per call.
local quantities, texts = {}, {}
local function text(n)
  local t = texts[n]
  if not t then
    t = string.format('%d', n)
    texts[n] = t
  end
  return t
end

-- The sale and its window are the same for every request of the call:
-- whether it takes orders is decided once (nil: it does).
local closed
if not m[1] or (campaign and not round_limit) then
  closed = 'not_found'
elseif m[1] ~= 'scheduled' then
  closed = 'ended'
elseif now < starts_at then
  closed = 'not_started'
elseif now >= ends_at then
  closed = 'ended'
end
local token_required = m[8] == '1'
local queued = m[9] == 'queue'

-- Whether purchase token `token` names a live admission of `shopper`'s
-- in the waiting room: the member at its position ('q<position>') is the
-- shopper's and still admitted, not freed (see KEYS[13]).
local function admission_live(token, shopper)
  local digits = string.match(token, '^q(%d+)$')
  -- At most 15 digits, as admission_position reads them: an integer still.
  local position = digits and #digits <= 15 and tonumber(digits)
  if not position or position < 1 then
    return false
  end
  local member = redis.call('ZRANGE', KEYS[12], position - 1, position - 1)[1]
  return member ~= nil and sub(member, find(member, ':', 1, true) + 1) == shopper
    and redis.call('ZSCORE', KEYS[13], member) ~= false
end

local function decide(shopper, qty_text, order_id, idem, token)
  local qty = quantities[qty_text]
  if not qty then
    qty = tonumber(qty_text)
    quantities[qty_text] = qty
  end
  local listed = orders[shopper]
  if listed ~= '' and find(listed, order_id, 1, true) then
    return 'replay', order_id
  end
  if idem ~= '' then
    local prev = prior[idem]
    if prev then
      local sep = string.find(prev, ' ', 1, true)
      if tonumber(string.sub(prev, sep + 1)) ~= qty then
        return 'idempotency_mismatch'
      end
      return 'replay', string.sub(prev, 1, sep - 1)
    end
  end
  if closed then
    return closed
  end
  if token_required then
    if token == '' then
      return 'purchase_token_required'
    end
    if redis.call('HEXISTS', KEYS[8], token) == 1 then
      return 'purchase_token_used'
    end
    if queued and not admission_live(token, shopper) then
      return 'purchase_token_lapsed'
    end
  end
  if held[shopper] + qty > per_user_limit then
    return 'limit_exceeded'
  end
  if (cancelled and cancelled[shopper] >= cancels_max)
      or (lapsed and lapsed[shopper] >= expiries_max) then
    return 'unpaid_limit_exceeded'
  end
  if campaign then
    if round_held[shopper] + qty > round_limit then
      return 'round_limit_exceeded'
    end
    if total_limit > 0 and total_held[shopper] + qty > total_limit then
      return 'campaign_limit_exceeded'
    end
  end
  if stock < qty then
    return 'sold_out'
  end
  stock = stock - qty
  taken = taken + qty
  if held[shopper] == 0 then
    new_buyers = new_buyers + 1
  end
  held[shopper] = held[shopper] + qty
  if campaign then
    round_held[shopper] = round_held[shopper] + qty
    total_held[shopper] = total_held[shopper] + qty
  end
  local amount = qty * price
  amounts[qty_text] = amounts[qty_text] or string.format('%d', amount)
  if not batch then
    batch = string.format('%d', redis.call('HINCRBY', KEYS[3], 'batches', 1))
    record_end = record_end .. ' batch=' .. batch
  end
  record_items = record_items + 2
  records[record_items - 1] = order_id
  records[record_items] = 'user_id=' .. shopper .. ' quantity=' .. qty_text .. ' amount_cents=' ..
    amounts[qty_text] .. record_end
  if orders[shopper] == '' then
    orders[shopper] = order_id
  else
    orders[shopper] = orders[shopper] .. ' ' .. order_id
  end
  changed_count = changed_count + 1
  changed_shoppers[changed_count] = shopper
  if idem ~= '' then
    prior[idem] = order_id .. ' ' .. qty_text
    changed_keys[#changed_keys + 1] = idem
  end
  if token_required then
    redis.call('HSET', KEYS[8], token, order_id)
  end
  made_count = made_count + 1
  made[made_count] = order_id
  return 'reserved', held[shopper]
end

-- HSET's arguments for `values` of each shopper the call changed: shopper,
-- as_text(value), ...
local function by_shopper(values, as_text)
  local args, n = {}, 0
  for i = 1, changed_count do
    local shopper = changed_shoppers[i]
    n = n + 2
    args[n - 1] = shopper
    args[n] = as_text(values[shopper], shopper)
  end
  return args
end

-- A shopper's entry in the shoppers hash: their units, then their orders.
local function entry(units, shopper)
  return text(units) .. ' ' .. orders[shopper]
end

local replies, r = {now, expires, price or 0, m[7] or '', 0}, 5
for i = 1, count do
  local a = i * 3 + 1
  local outcome, x = decide(argv[a], argv[a + 1], argv[a + 2], idems[i] or '', tokens[i] or '')
  r = r + 1
  if outcome == 'reserved' then
    replies[r] = x
  else
    replies[r] = outcome
    if x then
      r = r + 1
      replies[r] = x
    end
  end
end
replies[5] = stock

-- Write back once what changed (a shopper or key twice: its last value).
if taken > 0 then
  redis.call('DECRBY', KEYS[2], taken)
  redis.call('HINCRBY', KEYS[3], 'reserved', taken)
  if new_buyers > 0 then
    redis.call('HINCRBY', KEYS[3], 'buyers', new_buyers)
  end
  redis.call('HSET', KEYS[4], unpack(by_shopper(held, entry)))
  if campaign then
    redis.call('HSET', KEYS[15], unpack(by_shopper(round_held, text)))
    redis.call('HSET', KEYS[16], unpack(by_shopper(total_held, text)))
  end
  local made_ids = table.concat(made, ' ')
  redis.call('ZADD', KEYS[7], expires_text, made_ids)
  redis.call('HSET', KEYS[9], unpack(records))
  redis.call('XADD', KEYS[6], '*', 'order_ids', made_ids, 'batch', batch, 'units', text(taken))
  if #changed_keys > 0 then
    local entries = {}
    for _, idem in ipairs(changed_keys) do
      entries[#entries + 1] = idem
      entries[#entries + 1] = prior[idem]
    end
    redis.call('HSET', KEYS[5], unpack(entries))
  end
end
return replies
