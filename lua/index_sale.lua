-- index_sale: lists a sale in the two indexes of sales, before the sale's
-- own keys are written or changed (create_sale.lua, update_sale.lua). The
-- indexes are no one sale's, so they cannot share a script with the sale's
-- keys (a script touches one Cluster slot); they share a slot with each
-- other (`{fs:sales}:open` hashes on `fs:sales`). Indexing first means a
-- crash between the two steps leaves at worst an id that names no sale, or
-- a window end later than the sale's, which every reader skips or filters;
-- the other order could leave a sale that no listing and no order service
-- ever finds.
-- KEYS[1] fs:sales          sorted set: every sale id by creation time (ms)
-- KEYS[2] {fs:sales}:open   sorted set: sale id by the end of its payment
--                           window (ends_at + payment timeout, ms); only
--                           ever raised (GT), so a score is an upper bound
-- ARGV[1] the sale's created_at (ms), ARGV[2] the sale id, ARGV[3] the end
-- of its payment window (ms), ARGV[4] '1' for a new sale, '0' for a change
-- (raises the end of a sale still unsettled, never lists a settled one
-- again)
-- Returns 1 when the id is new to the index of every sale, 0 when it was
-- listed (its score is set to ARGV[1]).
if ARGV[4] == '1' then
  redis.call('ZADD', KEYS[2], 'GT', ARGV[3], ARGV[2])
else
  redis.call('ZADD', KEYS[2], 'XX', 'GT', ARGV[3], ARGV[2])
end
return redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
