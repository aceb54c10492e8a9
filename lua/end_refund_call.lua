-- end_refund_call: WeChat Pay ended an order's refund unpaid (ABNORMAL,
-- CLOSED): nothing is left to send or ask, so the order's refund call
-- leaves the outbox with its count of attempts, whichever attempt holds it
-- (one in flight then finds it gone and changes nothing: see
-- delivered.lua). From then on the merchant may settle the refund by hand
-- (settle_refund.lua).
-- KEYS[1] fs:{sale}:outbox    sorted set: 'event order_id' by due time (ms)
-- KEYS[2] fs:{sale}:attempts  hash: 'event order_id' -> attempts so far
-- ARGV[1] the order id
-- Returns 1 when it left the outbox, else 0.
local call = refund_call(ARGV[1])
redis.call('HDEL', KEYS[2], call)
return redis.call('ZREM', KEYS[1], call)
