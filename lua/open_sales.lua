-- open_sales: the sales whose payment window may not be over by Redis's
-- clock: upcoming, live, or ended less than one payment timeout ago (a
-- score is an upper bound, see index_sale.lua, so a sale whose end moved
-- earlier stays a little longer). Drops the entries whose window is over:
-- no reader needs them again (the order service keeps watching a sale it
-- still has work for, and reads the index of every sale when it starts).
-- KEYS[1] {fs:sales}:open  sorted set: sale id by the end of its payment window (ms)
-- Returns the ids still open.
local now = string.format('%d', now_ms())
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
return redis.call('ZRANGE', KEYS[1], now, '+inf', 'BYSCORE')
