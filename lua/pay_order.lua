-- pay_order: a payment arrived for an order. Decided once, atomically:
-- - pending_payment: the order is paid; its units move from reserved to paid
--   and its own entry of the deadline index goes (an order of a reserve
--   call's entry stays in it until it comes due: see expire_orders.lua).
-- - expired or cancelled (the units are already back on sale): the order is
--   marked refund_required and counted; stock is untouched.
-- - paid, refund_required, refunding or refunded: a repeat; nothing
--   changes.
-- A payment whose amount or currency differs from the order's changes
-- nothing either.
-- KEYS[1] fs:{sale}:orders     hash: order id -> record (see common.lua)
-- KEYS[2] fs:{sale}:stats      hash: reserved, paid, refund_required (units)
-- KEYS[3] fs:{sale}:deadlines  sorted set by due time: order ids (see expire_orders.lua)
-- KEYS[4] fs:{sale}:outbox     sorted set: hand-offs to the merchant by due time
-- ARGV[1] order id
-- ARGV[2] amount_cents paid ('' to take the order's own: simulated payments)
-- ARGV[3] currency paid (checked with the amount)
-- ARGV[4] '1' to queue a hand-off to the merchant's webhook
-- ARGV[5] the provider's transaction id (printable ASCII without spaces),
--         kept on the order the first time it is paid or marked
-- ARGV[6] '1' to queue the refund of a late payment (WeChat Pay) in the
--         same outbox ('wechatpay.refund order_id'); the order then keeps
--         refund=late
-- Returns {outcome, record} with outcome paid | unchanged | refund_required
-- | amount_mismatch, or {'not_found'}.
local order, text = load_order(KEYS[1], ARGV[1])
if not order then
  return {'not_found'}
end
if ARGV[2] ~= '' and (ARGV[2] ~= order.amount_cents or ARGV[3] ~= order.currency) then
  return {'amount_mismatch', text}
end
if order.status ~= 'pending_payment' and order.status ~= 'expired'
    and order.status ~= 'cancelled' then
  return {'unchanged', text}
end
local qty = tonumber(order.quantity)
local now = string.format('%d', now_ms())
local outcome = 'refund_required'
if order.status == 'pending_payment' then
  outcome = 'paid'
  redis.call('HINCRBY', KEYS[2], 'reserved', -qty)
  redis.call('HINCRBY', KEYS[2], 'paid', qty)
  redis.call('ZREM', KEYS[3], ARGV[1])
else
  redis.call('HINCRBY', KEYS[2], 'refund_required', qty)
end
order.status = outcome
order.paid_at = now
order.transaction_id = ARGV[5]
if outcome == 'refund_required' and ARGV[6] == '1' then
  order.refund = 'late'
  hand_off(KEYS[4], 'wechatpay.refund', ARGV[1], now)
end
local record = save_order(KEYS[1], ARGV[1], order)
if ARGV[4] == '1' then
  hand_off(KEYS[4], 'order.' .. outcome, ARGV[1], now)
end
return {outcome, record}
