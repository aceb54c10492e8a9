-- schedule_reminder: queues the 'campaign.round_starting' reminder of a
-- campaign's round in the outbox of the round's first item's sale, due at
-- ARGV[1] (due at once when that is past: claim_deliveries.lua compares
-- due times with Redis's clock), its attempts from zero. One queued there
-- already moves to the new due time. A round that has started (Redis
-- clock), or whose sale is no longer scheduled, gets none.
-- KEYS[1] fs:{campaign}:<sale>:sale      hash: the sale's fields
-- KEYS[2] fs:{campaign}:<sale>:outbox    sorted set: entries by due time (ms)
-- KEYS[3] fs:{campaign}:<sale>:attempts  hash: entry -> attempts so far
-- ARGV[1] when it is due (ms)
-- Returns 1 when queued, 0 when not.
if queue_reminder(KEYS[1], KEYS[2], KEYS[3], ARGV[1]) then
  return 1
end
return 0
