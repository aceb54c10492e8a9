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

-- A sale and its exact counts (see sale_snapshot.lua for the keys and the
-- reply), or {} when the sale does not exist.
local function snapshot(sale_key, stock, stats, buyers)
  local sale = redis.call('HGETALL', sale_key)
  if #sale == 0 then
    return {}
  end
  local c = redis.call('HMGET', stats, 'reserved', 'paid', 'cancelled', 'expired',
    'refund_required', 'queued')
  return {
    now_ms(), sale, tonumber(redis.call('GET', stock) or '0'),
    tonumber(c[1] or '0'), tonumber(c[2] or '0'), tonumber(c[3] or '0'), tonumber(c[4] or '0'),
    tonumber(c[5] or '0'), tonumber(c[6] or '0'),
    redis.call('HLEN', buyers)
  }
end
