-- accept_order: the order service took a reservation from the sale's
-- stream. The first time for an order: stamp queued_at, count its units as
-- queued, and queue the hand-off to the merchant. A redelivered entry
-- changes nothing.
-- KEYS[1] fs:{sale}:order:<order id>  hash: the order
-- KEYS[2] fs:{sale}:stats   hash: queued, ... (units)
-- KEYS[3] fs:{sale}:outbox  sorted set: hand-offs to the merchant by due time
-- ARGV[1] order id, ARGV[2] '1' to queue a hand-off to the merchant's webhook
-- Returns {'queued'} (first time) | {'unchanged'} | {'not_found'}.
local qty = redis.call('HGET', KEYS[1], 'quantity')
if not qty then
  return {'not_found'}
end
local now = now_ms()
if redis.call('HSETNX', KEYS[1], 'queued_at', now) == 0 then
  return {'unchanged'}
end
redis.call('HINCRBY', KEYS[2], 'queued', tonumber(qty))
if ARGV[2] == '1' then
  hand_off(KEYS[3], 'order.reserved', ARGV[1], now)
end
return {'queued'}
