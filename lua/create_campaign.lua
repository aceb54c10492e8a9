-- create_campaign: stores a new campaign in one step: its record and the
-- limits across its items (read by reserve.lua for each of its sales), at
-- version 1, every round x item's sale with its stock, and each round's
-- start reminder in its first item's sale's outbox. All of them share the
-- campaign's hash tag, so one script sees them on a Cluster too: a
-- campaign exists whole or not at all.
-- KEYS[1]            fs:{campaign}:campaign  hash: record (JSON), version,
--                    round_limit, total_limit (0: none)
-- KEYS[2+4(i-1)..]   per sale i: its fs:{..}:sale, :stock, :outbox and
--                    :attempts keys
-- ARGV[1] the record, ARGV[2] round_limit, ARGV[3] total_limit
-- ARGV[4..] per sale: stock_total, its reminder's due time (ms; '' for
--   none), n, then n field, value arguments of the sale
-- Returns 1 when created, 0 when the campaign or one of its sales exists.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
local sales = {}
local a = 4
for k = 2, #KEYS, 4 do
  local n = tonumber(ARGV[a + 2])
  sales[#sales + 1] = {sale = KEYS[k], stock = KEYS[k + 1], outbox = KEYS[k + 2],
    attempts = KEYS[k + 3], total = ARGV[a], due = ARGV[a + 1],
    fields = {unpack(ARGV, a + 3, a + 2 + n)}}
  a = a + 3 + n
end
for _, sale in ipairs(sales) do
  if redis.call('EXISTS', sale.sale) == 1 then
    return 0
  end
end
redis.call('HSET', KEYS[1], 'record', ARGV[1], 'version', 1, 'round_limit', ARGV[2],
  'total_limit', ARGV[3])
for _, sale in ipairs(sales) do
  create_sale_record(sale.sale, sale.stock, sale.total, sale.fields)
  if sale.due ~= '' then
    queue_reminder(sale.sale, sale.outbox, sale.attempts, sale.due)
  end
end
return 1
