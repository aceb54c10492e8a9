-- reserve: the hot path. One call takes a batch of reservations for one
-- sale (the inventory actor sends what queued while its previous call was
-- in flight), decided one after another in order, each exactly as if it
-- came alone. For each: recognise a resent call (the order already exists:
-- a client library retried after a dropped connection), replay an
-- idempotent retry, check the window (Redis clock), the purchase token, the
-- per-user limit and the stock, then take the stock, count the shopper,
-- record the order, index its payment deadline and queue it on the sale's
-- stream for the order service. Checks run in the order of
-- domain::check_reservation. The sale's fields, the clock and the stock are
-- read once per call; the stock and the `reserved` count are written once.
-- KEYS[1] fs:{sale}:sale     hash: the sale's fields
-- KEYS[2] fs:{sale}:stock    string: units remaining
-- KEYS[3] fs:{sale}:stats    hash: reserved, paid, cancelled, expired (units)
-- KEYS[4] fs:{sale}:buyers   hash: shopper -> units held
-- KEYS[5] fs:{sale}:idem     hash: shopper + key -> 'order_id quantity'
-- KEYS[6] fs:{sale}:uorders  hash: shopper -> space-separated order ids
-- KEYS[7] fs:{sale}:stream   stream: reservations for the order service
-- KEYS[8] fs:{sale}:deadlines  sorted set: unpaid order ids by expires_at
-- KEYS[9] fs:{sale}:ptokens   hash: purchase token id -> the order it bought
-- KEYS[9 + i] fs:{sale}:order:<order id of request i>  hash: its new order
-- ARGV, five per request i (from 1): shopper id, quantity, new order id,
-- idempotency field ('' when the request has no key), the verified purchase
-- token's id ('' when none).
-- Returns one reply per request, in order, each one of
--   {'reserved', now_ms, expires_ms, remaining, held, amount_cents, currency}
--   {'replay', order_id} (an idempotent retry, or this very call resent)
--   {'idempotency_mismatch'} | {'not_found'}
--   {'not_started'} | {'ended'} | {'purchase_token_required'} |
--   {'purchase_token_used'} | {'limit_exceeded'} | {'sold_out', remaining}
local m = redis.call('HMGET', KEYS[1], 'state', 'starts_at', 'ends_at', 'per_user_limit',
  'price_cents', 'payment_timeout_secs', 'currency', 'require_purchase_token')
local now = now_ms()
local stock = tonumber(redis.call('GET', KEYS[2]) or '0')
local taken = 0
local replies = {}

local function decide(user, qty, order_key, order_id, idem, token)
  if redis.call('EXISTS', order_key) == 1 then
    return {'replay', order_id}
  end
  if idem ~= '' then
    local prev = redis.call('HGET', KEYS[5], idem)
    if prev then
      local sep = string.find(prev, ' ', 1, true)
      if tonumber(string.sub(prev, sep + 1)) ~= qty then
        return {'idempotency_mismatch'}
      end
      return {'replay', string.sub(prev, 1, sep - 1)}
    end
  end
  if not m[1] then
    return {'not_found'}
  end
  if m[1] ~= 'scheduled' then
    return {'ended'}
  end
  if now < tonumber(m[2]) then
    return {'not_started'}
  end
  if now >= tonumber(m[3]) then
    return {'ended'}
  end
  local token_required = m[8] == '1'
  if token_required then
    if token == '' then
      return {'purchase_token_required'}
    end
    if redis.call('HEXISTS', KEYS[9], token) == 1 then
      return {'purchase_token_used'}
    end
  end
  local held = tonumber(redis.call('HGET', KEYS[4], user) or '0')
  if held + qty > tonumber(m[4]) then
    return {'limit_exceeded'}
  end
  if stock < qty then
    return {'sold_out', stock}
  end
  stock = stock - qty
  taken = taken + qty
  held = redis.call('HINCRBY', KEYS[4], user, qty)
  local amount = qty * tonumber(m[5])
  local expires = now + tonumber(m[6]) * 1000
  redis.call('HSET', order_key, 'user_id', user, 'quantity', qty, 'amount_cents', amount,
    'currency', m[7], 'status', 'pending_payment', 'created_at', now, 'expires_at', expires)
  local mine = redis.call('HGET', KEYS[6], user)
  redis.call('HSET', KEYS[6], user, mine and (mine .. ' ' .. order_id) or order_id)
  if idem ~= '' then
    redis.call('HSET', KEYS[5], idem, order_id .. ' ' .. qty)
  end
  redis.call('ZADD', KEYS[8], expires, order_id)
  if token_required then
    redis.call('HSET', KEYS[9], token, order_id)
  end
  redis.call('XADD', KEYS[7], '*', 'order_id', order_id, 'user_id', user, 'quantity', qty)
  return {'reserved', now, expires, stock, held, amount, m[7]}
end

for i = 1, #KEYS - 9 do
  local a = (i - 1) * 5
  replies[i] = decide(ARGV[a + 1], tonumber(ARGV[a + 2]), KEYS[9 + i], ARGV[a + 3], ARGV[a + 4],
    ARGV[a + 5])
end
if taken > 0 then
  redis.call('DECRBY', KEYS[2], taken)
  redis.call('HINCRBY', KEYS[3], 'reserved', taken)
end
return replies
