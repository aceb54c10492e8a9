-- settle_refund: WeChat Pay confirmed an order's refund (REFUND.SUCCESS, or
-- a refund call answered SUCCESS). A refunding order, or a late payment
-- (refund_required), becomes refunded; the counts do not move (the units
-- were counted where they went when the refund was asked for, or when the
-- late payment came). A repeat changes nothing.
-- KEYS[1] fs:{sale}:orders   hash: order id -> record (see common.lua)
-- KEYS[2] fs:{sale}:outbox   sorted set: outbox entries by due time
-- ARGV[1] order id
-- ARGV[2] '1' to queue the merchant's webhook hand-off of order.refunded
-- Returns {'refunded' | 'unchanged', record} | {'not_found'} |
-- {'conflict', status} (no refund of it was asked for).
local order, text = load_order(KEYS[1], ARGV[1])
if not order then
  return {'not_found'}
end
if order.status == 'refunded' then
  return {'unchanged', text}
end
if order.status == 'refund_required' then
  order.refund = 'late'
elseif order.status ~= 'refunding' then
  return {'conflict', order.status}
end
order.status = 'refunded'
local record = save_order(KEYS[1], ARGV[1], order)
if ARGV[2] == '1' then
  hand_off(KEYS[2], 'order.refunded', ARGV[1], string.format('%d', now_ms()))
end
return {'refunded', record}
