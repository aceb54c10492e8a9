-- give_back_cancel: gives back a cancel take_cancel.lua took for a cancel
-- that did not happen (WeChat Pay could not close the order, it was paid,
-- or the order could no longer be cancelled). Never below 0.
-- KEYS[1] fs:{sale}:cancels  hash: shopper -> orders cancelled (and taken)
-- ARGV[1] shopper id
-- Returns 1 when given back, else 0.
if tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0') < 1 then
  return 0
end
redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
return 1
