-- cancel_sale: call off a sale that has not started (Redis clock).
-- KEYS[1] fs:{sale}:sale  hash: the sale's fields
-- Returns {'ok'} | {'not_found'} | {'conflict', reason}.
local refusal = sale_cancel_refusal(KEYS[1], now_ms())
if refusal then
  return refusal
end
apply_sale_cancel(KEYS[1])
return {'ok'}
