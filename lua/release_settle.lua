-- release_settle: gives back the settle lease settle_sale.lua took, only
-- while it is still the caller's: a settle that ran past its lease must
-- not free the lease of the node that took it over meanwhile.
-- KEYS[1] fs:{sale}:settling   string: the lease holder's token
-- ARGV[1] the caller's token
-- Returns 1 when released, 0 when the lease was no longer the caller's
-- (expired, perhaps taken by another node).
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
