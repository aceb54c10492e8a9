-- join_reservations: creates the order service's consumer group on the
-- sale's stream, reading from the stream's first entry, unless it exists
-- (so any number of engine nodes may join, and join again after Redis lost
-- the group). A sale without reservations yet gets an empty stream; a sale
-- retention forgot gets none (a node that still watched it would otherwise
-- make a stream no retention deletes).
-- KEYS[1] fs:{sale}:stream  stream: reservations for the order service
-- KEYS[2] fs:{sale}:sale    hash: the sale's fields
-- ARGV[1] the consumer group
-- Returns 1 when the group was created, 0 when it existed, -1 when the
-- sale is gone.
if consumer_group(KEYS[1], ARGV[1]) then
  return 0
end
if redis.call('EXISTS', KEYS[2]) == 0 then
  return -1
end
redis.call('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM')
return 1
