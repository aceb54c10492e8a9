-- pay_order: a payment arrived for an order. Decided once, atomically:
-- - pending_payment: the order is paid; its units move from reserved to paid
--   and leave the deadline index.
-- - expired or cancelled (the units are already back on sale): the order is
--   marked refund_required and counted; stock is untouched.
-- - paid or refund_required: a repeat; nothing changes.
-- A payment whose amount or currency differs from the order's changes
-- nothing either.
-- KEYS[1] fs:{sale}:order:<order id>  hash: the order
-- KEYS[2] fs:{sale}:stats      hash: reserved, paid, refund_required (units)
-- KEYS[3] fs:{sale}:deadlines  sorted set: unpaid order ids by expires_at
-- KEYS[4] fs:{sale}:outbox     sorted set: hand-offs to the merchant by due time
-- ARGV[1] order id
-- ARGV[2] amount_cents paid ('' to take the order's own: simulated payments)
-- ARGV[3] currency paid (checked with the amount)
-- ARGV[4] the payment provider's transaction id
-- ARGV[5] '1' to queue a hand-off to the merchant's webhook
-- Returns {outcome, {field, value, ...}} with outcome paid | unchanged |
-- refund_required | amount_mismatch, or {'not_found'}.
local o = redis.call('HMGET', KEYS[1], 'quantity', 'status', 'amount_cents', 'currency')
if not o[2] then
  return {'not_found'}
end
if ARGV[2] ~= '' and (ARGV[2] ~= o[3] or ARGV[3] ~= o[4]) then
  return {'amount_mismatch', redis.call('HGETALL', KEYS[1])}
end
if o[2] == 'paid' or o[2] == 'refund_required' then
  return {'unchanged', redis.call('HGETALL', KEYS[1])}
end
local qty = tonumber(o[1])
local now = now_ms()
local outcome = 'refund_required'
if o[2] == 'pending_payment' then
  outcome = 'paid'
  redis.call('HINCRBY', KEYS[2], 'reserved', -qty)
  redis.call('HINCRBY', KEYS[2], 'paid', qty)
  redis.call('ZREM', KEYS[3], ARGV[1])
else
  redis.call('HINCRBY', KEYS[2], 'refund_required', qty)
end
redis.call('HSET', KEYS[1], 'status', outcome, 'paid_at', now, 'transaction_id', ARGV[4])
if ARGV[5] == '1' then
  hand_off(KEYS[4], 'order.' .. outcome, ARGV[1], now)
end
return {outcome, redis.call('HGETALL', KEYS[1])}
