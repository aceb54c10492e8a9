-- update_campaign: apply a merchant's change to a campaign in one step:
-- its record, its limits and every round x item's sale the change touches
-- (all of them share the campaign's hash tag, so one script sees them on a
-- Cluster too). Every step is checked before anything is written: either
-- all of the change is applied or none of it. The change was computed from
-- the campaign at ARGV[1]'s version (and each changed sale at its own):
-- if either moved on since, nothing is written.
-- The round reminders the change moves are (re)scheduled in the same step,
-- after the steps (queue_reminder in common.lua: a round that has started
-- by then, or whose sale is not scheduled, keeps none).
-- KEYS[1]            fs:{campaign}:campaign  hash: record, version, round_limit, total_limit
-- KEYS[2+5(i-1)..]   per step i: the sale's fs:{..}:sale, :stock, :stats,
--                    :outbox and :attempts keys
-- then per reminder j (the last 3 x ARGV[7] keys): its sale's fs:{..}:sale,
--                    :outbox and :attempts keys
-- ARGV[1] the campaign's version the change was computed from
-- ARGV[2] what in the change needs the first round not started ('' for nothing)
-- ARGV[3] the first round's start (ms), as read at that version
-- ARGV[4] the new record, ARGV[5] round_limit, ARGV[6] total_limit (0: none)
-- ARGV[7] how many reminders
-- ARGV[8..] per step: kind, sale id, n, then n arguments:
--   'create': stock_total, field, value pairs of the sale
--   'cancel': none
--   'change': version, restricted, end_now, stock_total, ends_at, field, value pairs
--             (as update_sale.lua)
-- then per reminder: when it is due (ms)
-- Returns {'ok'} | {'not_found'} | {'changed'} | {'started'} (ARGV[2] is refused)
--   | {'sale', sale id, 'not_found' | 'changed' | 'conflict', reason}.
local version = redis.call('HGET', KEYS[1], 'version')
if not version then
  return {'not_found'}
end
if version ~= ARGV[1] then
  return {'changed'}
end
local now = now_ms()
if ARGV[2] ~= '' and now >= tonumber(ARGV[3]) then
  return {'started'}
end

local reminders = tonumber(ARGV[7])
local step_keys_end = #KEYS - 3 * reminders
local steps = {}
local a = 8
for k = 2, step_keys_end, 5 do
  local n = tonumber(ARGV[a + 2])
  local step = {kind = ARGV[a], id = ARGV[a + 1], sale = KEYS[k], stock = KEYS[k + 1],
    stats = KEYS[k + 2], outbox = KEYS[k + 3], attempts = KEYS[k + 4]}
  if step.kind == 'create' then
    step.total = ARGV[a + 3]
    step.fields = {unpack(ARGV, a + 4, a + 2 + n)}
  elseif step.kind == 'change' then
    step.change = {version = ARGV[a + 3], restricted = ARGV[a + 4], end_now = ARGV[a + 5],
      total = tonumber(ARGV[a + 6]), ends = tonumber(ARGV[a + 7]),
      fields = {unpack(ARGV, a + 8, a + 2 + n)}}
  end
  steps[#steps + 1] = step
  a = a + 3 + n
end

for _, step in ipairs(steps) do
  local refusal
  if step.kind == 'create' then
    if redis.call('EXISTS', step.sale) == 1 then
      refusal = {'conflict', 'the sale already exists'}
    end
  elseif step.kind == 'cancel' then
    refusal = sale_cancel_refusal(step.sale, now)
  else
    refusal = sale_change_refusal(step.sale, step.stats, step.change, now)
  end
  if refusal then
    return {'sale', step.id, refusal[1], refusal[2] or ''}
  end
end

for _, step in ipairs(steps) do
  if step.kind == 'create' then
    create_sale_record(step.sale, step.stock, step.total, step.fields)
  elseif step.kind == 'cancel' then
    apply_sale_cancel(step.sale, step.outbox, step.attempts)
  else
    apply_sale_change(step.sale, step.stock, step.stats, step.change, now)
  end
end
for j = 0, reminders - 1 do
  local k = step_keys_end + 1 + 3 * j
  queue_reminder(KEYS[k], KEYS[k + 1], KEYS[k + 2], ARGV[a + j])
end
redis.call('HSET', KEYS[1], 'record', ARGV[4], 'round_limit', ARGV[5], 'total_limit', ARGV[6])
redis.call('HINCRBY', KEYS[1], 'version', 1)
return {'ok'}
