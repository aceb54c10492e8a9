-- open_sales: the sales whose payment window may not be over by Redis's
-- clock: upcoming, live, or ended less than one payment timeout ago (a
-- score is an upper bound, see index_sale.lua, so a sale whose end moved
-- earlier stays a little longer). The index also holds the sales past
-- their window that the order service has not settled yet (a shopper's
-- order list reads those too); they leave it when it settles them
-- (store::redis::indexes).
-- KEYS[1] {fs:sales}:open  sorted set: sale id by the end of its payment window (ms)
-- Returns the ids still open.
return redis.call('ZRANGE', KEYS[1], string.format('%d', now_ms()), '+inf', 'BYSCORE')
