-- accept_orders: the order service took reservations from the sale's
-- stream. The first time for an order: stamp queued_at, count its units as
-- queued, and queue the hand-off to the merchant. A redelivered entry
-- changes nothing. Answers each order's shopper (redelivered ones too), for
-- the caller to list the sale among the shopper's sales: that index has no
-- sale's slot.
-- KEYS[1] fs:{sale}:stats   hash: queued, ... (units)
-- KEYS[2] fs:{sale}:outbox  sorted set: hand-offs to the merchant by due time
-- KEYS[3] fs:{sale}:orders  hash: order id -> record (see common.lua)
-- ARGV[1] '1' to queue hand-offs to the merchant's webhook, ARGV[1 + i] order ids
-- Returns {outcomes, shoppers}: one outcome per order, in order: 'queued'
-- (first time) | 'unchanged' | 'not_found'; and the shoppers of the orders
-- found, each once.
local now = string.format('%d', now_ms())
local outcomes = {}
local shoppers, seen = {}, {}
for i = 2, #ARGV do
  local order = load_order(KEYS[3], ARGV[i])
  if not order then
    outcomes[#outcomes + 1] = 'not_found'
  else
    if not seen[order.user_id] then
      seen[order.user_id] = true
      shoppers[#shoppers + 1] = order.user_id
    end
    if order.queued_at then
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
end
return {outcomes, shoppers}
