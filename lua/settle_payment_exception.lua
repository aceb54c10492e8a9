-- settle_payment_exception: the merchant settled a payment exception by
-- hand. Its record stays, marked settled with the Redis time (a prefix
-- `settled:<ms> `), so it leaves the list and a repeat of the same
-- transaction is not recorded again (record_payment_exception.lua keeps
-- the first record).
-- KEYS[1] fs:payment_exceptions  hash: transaction id -> record
-- ARGV[1] the transaction id
-- Returns the record as it was, or false when there is none not settled.
local record = redis.call('HGET', KEYS[1], ARGV[1])
if not record or string.sub(record, 1, 8) == 'settled:' then
  return false
end
redis.call('HSET', KEYS[1], ARGV[1],
  'settled:' .. string.format('%d', now_ms()) .. ' ' .. record)
return record
