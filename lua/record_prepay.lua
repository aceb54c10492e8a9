-- record_prepay: keeps WeChat Pay's prepay id of an unpaid order, once.
-- The first id kept stays: a second prepay of the same order (a retry, a
-- race of two requests) answers the order with the id kept first, so the
-- shopper never pays through two prepays of one order.
-- KEYS[1] fs:{sale}:orders  hash: order id -> record (see common.lua)
-- ARGV[1] order id
-- ARGV[2] the prepay id (printable ASCII without spaces)
-- Returns {'ok', record} | {'not_found'} | {'conflict', status} (the order
-- is no longer pending_payment).
local order, text = load_order(KEYS[1], ARGV[1])
if not order then
  return {'not_found'}
end
if order.status ~= 'pending_payment' then
  return {'conflict', order.status}
end
if order.prepay_id then
  return {'ok', text}
end
order.prepay_id = ARGV[2]
return {'ok', save_order(KEYS[1], ARGV[1], order)}
