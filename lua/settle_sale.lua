-- settle_sale: may the caller settle this sale now (list it among its
-- shoppers' sales, then take it off the unsettled sales: see
-- store::redis::indexes)? Only once the sale has ended by Redis's clock,
-- the clock that refuses reservations (reserve.lua), so no order can be
-- made after its shoppers were read (an ended sale's end never moves); a
-- cancelled sale at once. Whether its payment window is over and nothing
-- is left to do, the order service has checked. At most one engine node
-- settles a sale at a time: the one holding the lease, named by its token
-- (given back by release_settle.lua, only while it is the caller's).
-- KEYS[1] fs:{sale}:sale       hash: the sale's fields
-- KEYS[2] fs:{sale}:settling   string: the lease holder's token, while one
--                              node settles
-- ARGV[1] the lease (ms), ARGV[2] the sale's score in the unsettled sales
-- (the end of its payment window, an upper bound): what decides for an id
-- that names no sale (one being created is indexed a moment before it
-- exists, its window still to come), ARGV[3] the caller's token
-- Returns 'open' (it may still take reservations), 'busy' (another node
-- holds the lease) or 'go' (the lease is the caller's until it is done).
local m = redis.call('HMGET', KEYS[1], 'state', 'ends_at')
local closes
if not m[1] then
  closes = tonumber(ARGV[2])
elseif m[1] ~= 'cancelled' then
  closes = tonumber(m[2])
end
if closes and closes > now_ms() then
  return 'open'
end
if not redis.call('SET', KEYS[2], ARGV[3], 'NX', 'PX', ARGV[1]) then
  return 'busy'
end
return 'go'
