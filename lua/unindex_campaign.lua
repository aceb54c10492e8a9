-- unindex_campaign: takes an id that names no campaign off the index of
-- campaigns, once it is old enough not to be one being created. A
-- campaign is indexed just before its record is written (see
-- store::redis), so a fresh id without a record may be one whose creation
-- is under way on another node; one whose creation was refused or crashed
-- is older than the grace by the time retention asks (at the next start).
-- KEYS[1] fs:campaigns   sorted set: campaign id by creation time (ms)
-- ARGV[1] the campaign id, ARGV[2] the grace (ms)
-- Returns 'gone' (no longer indexed) | 'kept' (indexed within the grace).
local created = redis.call('ZSCORE', KEYS[1], ARGV[1])
if created and tonumber(created) > now_ms() - tonumber(ARGV[2]) then
  return 'kept'
end
redis.call('ZREM', KEYS[1], ARGV[1])
return 'gone'
