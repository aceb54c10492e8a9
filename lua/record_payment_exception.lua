-- record_payment_exception: keeps a verified payment the engine could not
-- apply (a wrong amount, an unknown order), once per transaction, stamped
-- with the Redis clock. One global key: an unknown order names no sale.
-- KEYS[1] fs:payment_exceptions  hash: transaction id -> record
-- ARGV[1] the transaction id, ARGV[2] the record without its time (see
-- store/redis/codec.rs)
-- Returns 1 when recorded, 0 when this transaction was already.
return redis.call('HSETNX', KEYS[1], ARGV[1], now_ms() .. ' ' .. ARGV[2])
