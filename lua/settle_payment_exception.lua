-- settle_payment_exception: the merchant settled a payment exception by
-- hand, and it leaves the list. A later notification of the same
-- transaction is recorded again (its money is still not applied).
-- KEYS[1] fs:payment_exceptions  hash: transaction id -> record
-- ARGV[1] the transaction id
-- Returns the record taken off, or false when there was none.
local record = redis.call('HGET', KEYS[1], ARGV[1])
if record then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
return record
