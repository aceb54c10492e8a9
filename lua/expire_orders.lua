-- expire_orders: payment deadlines. Up to ARGV[1] orders of the deadline
-- index due by the Redis clock are looked at: each still pending_payment
-- and past its expires_at becomes expired in the same step
-- that puts its units back on sale and off the shopper's count. An order no
-- longer pending (paid, cancelled) just leaves the deadline index. A payment and an expiry of the same order are two
-- scripts: whichever runs first decides, the other sees the new status.
-- A due order with a WeChat Pay prepay id is not expired here: the shopper
-- could still pay it until WeChat Pay closes it. It stays pending and
-- held, its deadline moved to now + ARGV[2] ms (so no engine node looks at
-- it again while the caller closes it), and it is returned as held; the
-- caller expires it (expire_order.lua) once WeChat Pay closed it.
-- KEYS[1] fs:{sale}:stock      string: units remaining
-- KEYS[2] fs:{sale}:stats      hash: reserved, expired, ... (units)
-- KEYS[3] fs:{sale}:buyers     hash: shopper -> units held
-- KEYS[4] fs:{sale}:deadlines  sorted set: unpaid order ids by expires_at
-- KEYS[5] fs:{sale}:orders     hash: order id -> record (see common.lua)
-- KEYS[6], KEYS[7] a campaign's sale only: fs:{campaign}:round:<n>:holds
-- and fs:{campaign}:holds (see reserve.lua)
-- ARGV[1] the most orders to look at in this call
-- ARGV[2] how long a held order is left alone, in milliseconds
-- Returns {{order_id, record, ...}, {order_id, record, ...}}: the orders
-- this call expired, and those it held.
local now = now_ms()
local due = redis.call('ZRANGE', KEYS[4], '-inf', now, 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[1]))
local expired = {}
local held = {}
for _, order_id in ipairs(due) do
  local order, text = load_order(KEYS[5], order_id)
  if not order or order.status ~= 'pending_payment' then
    redis.call('ZREM', KEYS[4], order_id)
  elseif order.prepay_id then
    redis.call('ZADD', KEYS[4], now + tonumber(ARGV[2]), order_id)
    held[#held + 1] = order_id
    held[#held + 1] = text
  else
    order.status = 'expired'
    local record = save_order(KEYS[5], order_id, order)
    release_units(KEYS[1], KEYS[2], KEYS[3], order.user_id, tonumber(order.quantity), 'expired',
      KEYS[6], KEYS[7])
    redis.call('ZREM', KEYS[4], order_id)
    expired[#expired + 1] = order_id
    expired[#expired + 1] = record
  end
end
return {expired, held}
