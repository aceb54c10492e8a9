-- take_cancel: takes one cancel from a shopper's allowance in a sale
-- before the cancel's WeChat Pay close (which cannot be undone), so two
-- cancels at once never both close with one cancel left; cancel_order.lua
-- then cancels under it ('taken'), or the engine gives it back
-- (give_back_cancel.lua) when the cancel did not happen.
-- KEYS[1] fs:{sale}:cancels  hash: shopper -> orders cancelled (and taken)
-- ARGV[1] shopper id, ARGV[2] the most orders a shopper may cancel
-- Returns {'taken'} | {'cancels_exhausted', cancelled so far}.
local cancelled = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if cancelled >= tonumber(ARGV[2]) then
  return {'cancels_exhausted', cancelled}
end
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
return {'taken'}
