-- refund_order: the merchant refunds a paid order. Decided once,
-- atomically: its units leave `paid` for `refunded`, and with restock
-- (only while the sale is live, by the Redis clock) go back on sale and off
-- the shopper's counts, a campaign's round and campaign counts included
-- (counted in `restocked`); else they stay off sale, still the shopper's.
-- With WeChat Pay the order becomes `refunding` and the refund call is
-- queued in the sale's outbox; without it (simulated payments) the order
-- is `refunded` at once.
-- KEYS[1] fs:{sale}:orders   hash: order id -> record (see common.lua)
-- KEYS[2] fs:{sale}:stats    hash: paid, refunded, restocked (units), buyers
-- KEYS[3] fs:{sale}:outbox   sorted set: outbox entries by due time
-- KEYS[4] fs:{sale}:sale     hash: the sale's fields (state, window)
-- KEYS[5] fs:{sale}:stock    string: units remaining
-- KEYS[6] fs:{sale}:shoppers  hash: shopper -> 'units order_ids' (see common.lua)
-- KEYS[7], KEYS[8] a campaign's sale only: fs:{campaign}:round:<n>:holds
-- and fs:{campaign}:holds (see reserve.lua)
-- ARGV[1] order id
-- ARGV[2] '1' to put the units back on sale
-- ARGV[3] '1' to queue the refund call to WeChat Pay (else refunded now)
-- ARGV[4] '1' to queue the merchant's webhook hand-off of order.refunded
--         (when refunded now)
-- Returns {'refunding' | 'refunded', record} | {'not_found'} |
-- {'conflict', status} (not paid) | {'not_live'} (restock asked for a
-- sale that is not live).
local order = load_order(KEYS[1], ARGV[1])
if not order then
  return {'not_found'}
end
if order.status ~= 'paid' then
  return {'conflict', order.status}
end
local now = now_ms()
local qty = tonumber(order.quantity)
if ARGV[2] == '1' then
  local m = redis.call('HMGET', KEYS[4], 'state', 'starts_at', 'ends_at')
  if m[1] ~= 'scheduled' or now < tonumber(m[2]) or now >= tonumber(m[3]) then
    return {'not_live'}
  end
  restock_units(KEYS[5], KEYS[2], KEYS[6], order.user_id, qty, KEYS[7], KEYS[8])
  redis.call('HINCRBY', KEYS[2], 'restocked', qty)
  order.refund = 'restocked'
else
  order.refund = 'kept'
end
redis.call('HINCRBY', KEYS[2], 'paid', -qty)
redis.call('HINCRBY', KEYS[2], 'refunded', qty)
local now_text = string.format('%d', now)
if ARGV[3] == '1' then
  order.status = 'refunding'
  hand_off(KEYS[3], 'wechatpay.refund', ARGV[1], now_text)
else
  order.status = 'refunded'
  if ARGV[4] == '1' then
    hand_off(KEYS[3], 'order.refunded', ARGV[1], now_text)
  end
end
return {order.status, save_order(KEYS[1], ARGV[1], order)}
