-- settle_refund: an order's refund is settled. Either WeChat Pay confirmed
-- it (REFUND.SUCCESS, or a refund call or query answered SUCCESS), or the
-- merchant paid the shopper back another way after WeChat Pay could not
-- (ABNORMAL, CLOSED, or a refund call it refused for good: by hand). A
-- refunding order, or a late payment (refund_required), becomes refunded;
-- the counts do not move (the units were counted where they went when the
-- refund was asked for, or when the late payment came). Its refund call's
-- dead letter, if any, goes in the same step: nothing is owed any more, so
-- nothing is left to re-drive. A repeat changes nothing.
-- By hand, only while the order's refund call is not in the outbox (queued,
-- leased, or PROCESSING at WeChat Pay, which may still pay it), and the
-- order keeps the Redis time it was settled (refund_settled_by_hand_at).
-- KEYS[1] fs:{sale}:orders        hash: order id -> record (see common.lua)
-- KEYS[2] fs:{sale}:outbox        sorted set: outbox entries by due time
-- KEYS[3] fs:{sale}:dead_letters  hash: 'event order_id' -> record
-- ARGV[1] order id
-- ARGV[2] '1' to queue the merchant's webhook hand-off of order.refunded
-- ARGV[3] '1' when the merchant settles it by hand
-- Returns {'refunded' | 'unchanged', record} | {'not_found'} |
-- {'conflict', status} (no refund of it was asked for) | {'call_queued'}
-- (by hand, while its refund call is in the outbox: queued, leased or due
-- to ask again).
local order, text = load_order(KEYS[1], ARGV[1])
if not order then
  return {'not_found'}
end
if order.status == 'refunded' then
  return {'unchanged', text}
end
if order.status ~= 'refund_required' and order.status ~= 'refunding' then
  return {'conflict', order.status}
end
local call = refund_call(ARGV[1])
local now = string.format('%d', now_ms())
if ARGV[3] == '1' then
  if redis.call('ZSCORE', KEYS[2], call) then
    return {'call_queued'}
  end
  order.refund_settled_by_hand_at = now
end
redis.call('HDEL', KEYS[3], call)
if order.status == 'refund_required' then
  order.refund = 'late'
end
order.status = 'refunded'
local record = save_order(KEYS[1], ARGV[1], order)
if ARGV[2] == '1' then
  hand_off(KEYS[2], 'order.refunded', ARGV[1], now)
end
return {'refunded', record}
