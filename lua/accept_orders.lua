-- accept_orders: the order service took reservations from the sale's
-- stream. The first time for an order: stamp queued_at, count its units as
-- queued, and queue the hand-off to the merchant. A redelivered entry
-- changes nothing.
-- KEYS[1] fs:{sale}:stats   hash: queued, ... (units)
-- KEYS[2] fs:{sale}:outbox  sorted set: hand-offs to the merchant by due time
-- KEYS[3] fs:{sale}:orders  hash: order id -> record (see common.lua)
-- ARGV[1] '1' to queue hand-offs to the merchant's webhook, ARGV[1 + i] order ids
-- Returns one outcome per order, in order: 'queued' (first time) |
-- 'unchanged' | 'not_found'.
local now = string.format('%d', now_ms())
local outcomes = {}
for i = 2, #ARGV do
  local order = load_order(KEYS[3], ARGV[i])
  if not order then
    outcomes[#outcomes + 1] = 'not_found'
  elseif order.queued_at then
    outcomes[#outcomes + 1] = 'unchanged'
  else
    order.queued_at = now
    save_order(KEYS[3], ARGV[i], order)
    redis.call('HINCRBY', KEYS[1], 'queued', tonumber(order.quantity))
    if ARGV[1] == '1' then
      hand_off(KEYS[2], 'order.reserved', ARGV[i], now)
    end
    outcomes[#outcomes + 1] = 'queued'
  end
end
return outcomes
