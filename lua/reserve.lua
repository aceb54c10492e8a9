-- reserve: the hot path. In one atomic step: recognise a resent call (the
-- order already exists: a client library retried after a dropped
-- connection), replay an idempotent retry, check
-- the window (Redis clock), the per-user limit and the stock, then take the
-- stock, count the shopper, record the order, index its payment deadline
-- and queue it on the sale's stream for the order service. Checks run in the order of
-- domain::check_reservation.
-- KEYS[1] fs:{sale}:sale     hash: the sale's fields
-- KEYS[2] fs:{sale}:stock    string: units remaining
-- KEYS[3] fs:{sale}:stats    hash: reserved, paid, cancelled, expired (units)
-- KEYS[4] fs:{sale}:buyers   hash: shopper -> units held
-- KEYS[5] fs:{sale}:idem     hash: shopper + key -> 'order_id quantity'
-- KEYS[6] fs:{sale}:uorders  hash: shopper -> space-separated order ids
-- KEYS[7] fs:{sale}:order:<order id>  hash: the new order
-- KEYS[8] fs:{sale}:stream   stream: reservations for the order service
-- KEYS[9] fs:{sale}:deadlines  sorted set: unpaid order ids by expires_at
-- KEYS[10] fs:{sale}:ptokens   hash: purchase token id -> the order it bought
-- ARGV[1] shopper id, ARGV[2] quantity, ARGV[3] new order id,
-- ARGV[4] idempotency field ('' when the request has no key)
-- ARGV[5] the verified purchase token's id ('' when none)
-- Returns one of
--   {'reserved', now_ms, expires_ms, remaining, held, amount_cents, currency}
--   {'replay', order_id} (an idempotent retry, or this very call resent)
--   {'idempotency_mismatch'} | {'not_found'}
--   {'not_started'} | {'ended'} | {'purchase_token_required'} |
--   {'purchase_token_used'} | {'limit_exceeded'} | {'sold_out', remaining}
local user, qty, order_id, idem, token = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5]
if redis.call('EXISTS', KEYS[7]) == 1 then
  return {'replay', order_id}
end
if idem ~= '' then
  local prev = redis.call('HGET', KEYS[5], idem)
  if prev then
    local sep = string.find(prev, ' ', 1, true)
    if string.sub(prev, sep + 1) ~= ARGV[2] then
      return {'idempotency_mismatch'}
    end
    return {'replay', string.sub(prev, 1, sep - 1)}
  end
end
local m = redis.call('HMGET', KEYS[1], 'state', 'starts_at', 'ends_at', 'per_user_limit',
  'price_cents', 'payment_timeout_secs', 'currency', 'require_purchase_token')
if not m[1] then
  return {'not_found'}
end
local now = now_ms()
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
  if redis.call('HEXISTS', KEYS[10], token) == 1 then
    return {'purchase_token_used'}
  end
end
local held = tonumber(redis.call('HGET', KEYS[4], user) or '0')
if held + qty > tonumber(m[4]) then
  return {'limit_exceeded'}
end
local stock = tonumber(redis.call('GET', KEYS[2]) or '0')
if stock < qty then
  return {'sold_out', stock}
end
local remaining = redis.call('DECRBY', KEYS[2], qty)
redis.call('HINCRBY', KEYS[3], 'reserved', qty)
held = redis.call('HINCRBY', KEYS[4], user, qty)
local amount = qty * tonumber(m[5])
local expires = now + tonumber(m[6]) * 1000
redis.call('HSET', KEYS[7], 'user_id', user, 'quantity', qty, 'amount_cents', amount,
  'currency', m[7], 'status', 'pending_payment', 'created_at', now, 'expires_at', expires)
local mine = redis.call('HGET', KEYS[6], user)
redis.call('HSET', KEYS[6], user, mine and (mine .. ' ' .. order_id) or order_id)
if idem ~= '' then
  redis.call('HSET', KEYS[5], idem, order_id .. ' ' .. ARGV[2])
end
redis.call('ZADD', KEYS[9], expires, order_id)
if token_required then
  redis.call('HSET', KEYS[10], token, order_id)
end
redis.call('XADD', KEYS[8], '*', 'order_id', order_id, 'user_id', user, 'quantity', qty,
  'amount_cents', amount, 'expires_at', expires)
return {'reserved', now, expires, remaining, held, amount, m[7]}
