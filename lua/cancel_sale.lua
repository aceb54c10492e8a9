-- cancel_sale: call off a sale that has not started (Redis clock), and
-- drop what its outbox holds (see apply_sale_cancel).
-- KEYS[1] fs:{sale}:sale      hash: the sale's fields
-- KEYS[2] fs:{sale}:outbox    sorted set: entries by due time (ms)
-- KEYS[3] fs:{sale}:attempts  hash: entry -> attempts so far
-- Returns {'ok'} | {'not_found'} | {'conflict', reason}.
local refusal = sale_cancel_refusal(KEYS[1], now_ms())
if refusal then
  return refusal
end
apply_sale_cancel(KEYS[1], KEYS[2], KEYS[3])
return {'ok'}
