-- forget_sale: retention. Deletes every key of a settled sale once the
-- retention has passed since its payment window closed, by Redis's clock:
-- past `ends_at` + payment timeout + retention, with no payment deadline
-- left to process (the deadline index is empty: no order unpaid), no reservation the order service has not
-- processed (the stream is trimmed to nothing once every entry is
-- acknowledged), no hand-off in the outbox and no refund among its dead
-- letters (money owed to a shopper stays until the merchant re-drives it,
-- or settles it by hand: see settle_refund.lua);
-- the other dead letters go with the sale. UNLINK frees the memory off
-- Redis's main thread, so a large sale does not hold up other sales. The indexes are no sale's slot: the caller
-- takes the sale off them afterwards (see index_sale.lua for the order).
-- KEYS[1] fs:{sale}:sale       hash: the sale's fields
-- KEYS[2] fs:{sale}:deadlines  sorted set: payment deadlines (see expire_orders.lua)
-- KEYS[3] fs:{sale}:stream     stream: reservations for the order service
-- KEYS[4] fs:{sale}:outbox     sorted set: hand-offs to the merchant
-- KEYS[5] fs:{sale}:shoppers  hash: shopper -> 'units order_ids' (see common.lua)
-- KEYS[6] fs:{sale}:dead_letters  hash: 'event order_id' -> record
-- KEYS[7..] every other key of the sale
-- ARGV[1] the retention (ms)
-- Returns {'gone'} (no such sale, nothing left to clean) | {'kept'} (not
-- due, or work left) | {'owed'} (a refund among the dead letters) |
-- {'forgotten', shoppers} with the shoppers who had
-- orders in it (again while the shoppers hash is left).
local window = redis.call('HMGET', KEYS[1], 'ends_at', 'payment_timeout_secs')
if not window[1] then
  if redis.call('EXISTS', KEYS[5]) == 1 then
    return {'forgotten', redis.call('HKEYS', KEYS[5])}
  end
  return {'gone'}
end
local due = tonumber(window[1]) + tonumber(window[2]) * 1000 + tonumber(ARGV[1])
if now_ms() < due
    or redis.call('ZCARD', KEYS[2]) > 0
    or redis.call('XLEN', KEYS[3]) > 0
    or redis.call('ZCARD', KEYS[4]) > 0 then
  return {'kept'}
end
for _, letter in ipairs(redis.call('HKEYS', KEYS[6])) do
  if string.sub(letter, 1, 17) == 'wechatpay.refund ' then
    return {'owed'}
  end
end
local shoppers = redis.call('HKEYS', KEYS[5])
redis.call('UNLINK', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
for i = 6, #KEYS, 1000 do
  redis.call('UNLINK', unpack(KEYS, i, math.min(i + 999, #KEYS)))
end
return {'forgotten', shoppers}
