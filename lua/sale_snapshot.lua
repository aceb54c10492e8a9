-- sale_snapshot: read a sale and its exact counts in one atomic step.
-- KEYS[1] fs:{sale}:sale    hash: the sale's fields
-- KEYS[2] fs:{sale}:stock   string: units remaining
-- KEYS[3] fs:{sale}:stats   hash: reserved, paid, cancelled, expired, refund_required, queued,
--                           refunded, restocked (units), buyers (shoppers
--                           holding units)
-- Returns {} when the sale does not exist, else
-- {now_ms, {field, value, ...}, remaining, reserved, paid, cancelled, expired,
--  refund_required, queued, buyers, refunded, restocked}.
return snapshot(KEYS[1], KEYS[2], KEYS[3])
