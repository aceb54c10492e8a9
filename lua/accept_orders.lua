-- accept_orders: the order service took reservations from the sale's
-- stream. The first time for an order: stamp queued_at, count its units as
-- queued, and queue the hand-off to the merchant. A redelivered entry
-- changes nothing.
-- KEYS[1] fs:{sale}:stats   hash: queued, ... (units)
-- KEYS[2] fs:{sale}:outbox  sorted set: hand-offs to the merchant by due time
-- KEYS[2 + i] fs:{sale}:order:<ARGV[1 + i]>  hash: an order
-- ARGV[1] '1' to queue hand-offs to the merchant's webhook, ARGV[1 + i] order ids
-- Returns one outcome per order, in order: 'queued' (first time) |
-- 'unchanged' | 'not_found'.
local now = now_ms()
local outcomes = {}
for i = 2, #ARGV do
  local key = KEYS[i + 1]
  local qty = redis.call('HGET', key, 'quantity')
  if not qty then
    outcomes[#outcomes + 1] = 'not_found'
  elseif redis.call('HSETNX', key, 'queued_at', now) == 0 then
    outcomes[#outcomes + 1] = 'unchanged'
  else
    redis.call('HINCRBY', KEYS[1], 'queued', tonumber(qty))
    if ARGV[1] == '1' then
      hand_off(KEYS[2], 'order.reserved', ARGV[i], now)
    end
    outcomes[#outcomes + 1] = 'queued'
  end
end
return outcomes
