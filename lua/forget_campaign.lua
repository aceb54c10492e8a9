-- forget_campaign: retention of a campaign's own keys. Once retention has
-- forgotten every sale of it (forget_sale.lua, each after its own payment
-- window: a round stopped early goes by when it stopped; no sale hash is
-- left), deletes its record and the shoppers' counts, in one step. The
-- index of campaigns is no campaign's slot: the caller takes the campaign
-- off it afterwards (a crash in between leaves an id that names no
-- campaign, which readers skip).
-- KEYS[1] fs:{campaign}:campaign         hash: record, version, limits
-- KEYS[2] fs:{campaign}:holds            hash: shopper -> units in all
-- KEYS[3 .. 2 + ARGV[2]] fs:{campaign}:round:<n>:holds, one per round
-- KEYS[3 + ARGV[2] ..]   fs:{campaign}:<sale>:sale, one per round x item
-- ARGV[1] the version the caller read the record at (a change since:
-- kept), ARGV[2] how many rounds
-- Returns 'gone' (no such campaign) | 'kept' | 'forgotten'.
local version = redis.call('HGET', KEYS[1], 'version')
if not version then
  return 'gone'
end
if version ~= ARGV[1] then
  return 'kept'
end
local rounds = tonumber(ARGV[2])
for i = 3 + rounds, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    return 'kept'
  end
end
redis.call('UNLINK', unpack(KEYS, 1, 2 + rounds))
return 'forgotten'
