-- create_campaign: stores a new campaign's record and the limits across its
-- items (read by reserve.lua for each of its sales), at version 1, before
-- any of its sales exists.
-- KEYS[1] fs:{campaign}:campaign  hash: record (JSON), version,
--                                 round_limit, total_limit (0: none)
-- ARGV[1] the record, ARGV[2] round_limit, ARGV[3] total_limit
-- Returns 1 when created, 0 when the id already exists.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'record', ARGV[1], 'version', 1, 'round_limit', ARGV[2],
  'total_limit', ARGV[3])
return 1
