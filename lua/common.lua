-- common: helpers every script is prefixed with (see store::redis::Scripts).
-- Only functions: nothing here runs or touches a key by itself.

-- The Redis clock in milliseconds: the one clock of every engine node.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Puts an unpaid order's units back on sale and off the shopper's count,
-- and moves them from `reserved` to `counter` (cancelled or expired).
local function release_units(stock, stats, buyers, user, qty, counter)
  redis.call('INCRBY', stock, qty)
  redis.call('HINCRBY', stats, 'reserved', -qty)
  redis.call('HINCRBY', stats, counter, qty)
  if redis.call('HINCRBY', buyers, user, -qty) <= 0 then
    redis.call('HDEL', buyers, user)
  end
end

-- Queues a hand-off to the merchant's webhook, due now; the same event of
-- the same order is queued once.
local function hand_off(outbox, event, order_id, now)
  redis.call('ZADD', outbox, 'NX', now, event .. ' ' .. order_id)
end
