-- audit_sale: every record of a sale in one atomic step, for reconciliation
-- (domain::SaleRecords::audit). Reads only; an operator's tool.
-- KEYS[1..3] as sale_snapshot: sale, stock, stats
-- KEYS[4] fs:{sale}:shoppers  hash: shopper -> 'units order_ids' (see common.lua)
-- KEYS[5] fs:{sale}:stream     stream: reservations not yet trimmed (see
--                               ack_reservations.lua)
-- KEYS[6] fs:{sale}:deadlines  sorted set by due time: order ids (see expire_orders.lua)
-- KEYS[7] fs:{sale}:orders     hash: order id -> record (see common.lua)
-- KEYS[8] fs:{sale}:accepted   set: batches the order service took
--                               (accept_orders.lua)
-- Returns {} when the sale does not exist, else
-- {snapshot (as sale_snapshot), {shopper, 'units ids', ...},
--  {order id of each stream entry}, {deadline order ids},
--  {order id, record, ...}, {accepted batch, ...}}.
local snap = snapshot(KEYS[1], KEYS[2], KEYS[3])
if #snap == 0 then
  return {}
end
local streamed = {}
for _, entry in ipairs(redis.call('XRANGE', KEYS[5], '-', '+')) do
  local fields = entry[2]
  for f = 1, #fields, 2 do
    if fields[f] == 'order_ids' then
      for id in string.gmatch(fields[f + 1], '%S+') do
        streamed[#streamed + 1] = id
      end
    end
  end
end
return {
  snap, redis.call('HGETALL', KEYS[4]), streamed,
  redis.call('ZRANGE', KEYS[6], 0, -1), redis.call('HGETALL', KEYS[7]),
  redis.call('SMEMBERS', KEYS[8])
}
