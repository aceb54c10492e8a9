-- expire_orders: payment deadlines. The deadline index holds one entry per
-- reserve call, the space-separated ids of the orders it made (they share
-- their deadline), and one per held order (below). Its entries due by the
-- Redis clock are taken whole, in order, until ARGV[1] orders were looked
-- at (so a step looks at up to ARGV[1] plus one call's orders): each entry
-- leaves the index, and each of its orders still pending_payment becomes
-- expired in the same step that puts its units back on sale and off the
-- shopper's count, and counts it among the shopper's expiries. Its orders no longer pending (paid, cancelled) are
-- passed over: a payment or a cancel takes out only an order's own entry
-- (pay_order.lua, cancel_order.lua), so an order of a call's entry stays
-- in it until the entry comes due. A payment and an expiry of the same
-- order are two scripts: whichever runs first decides, the other sees the
-- new status.
-- A due order with a WeChat Pay prepay id is not expired here: the shopper
-- could still pay it until WeChat Pay closes it. It stays pending and
-- held, in an entry of its own due now + ARGV[2] ms (so no engine node
-- looks at it again while the caller closes it; postpone_expiry.lua moves
-- it), and it is returned as held; the caller expires it
-- (expire_order.lua) once WeChat Pay closed it.
-- KEYS[1] fs:{sale}:stock      string: units remaining
-- KEYS[2] fs:{sale}:stats      hash: reserved, expired, ... (units), buyers
-- KEYS[3] fs:{sale}:shoppers  hash: shopper -> 'units order_ids' (see common.lua)
-- KEYS[4] fs:{sale}:deadlines  sorted set by due time: order ids (see above)
-- KEYS[5] fs:{sale}:orders     hash: order id -> record (see common.lua)
-- KEYS[6] fs:{sale}:expiries   hash: shopper -> their orders expired
--                              unpaid (reserve.lua refuses them past its bound)
-- KEYS[7], KEYS[8] a campaign's sale only: fs:{campaign}:round:<n>:holds
-- and fs:{campaign}:holds (see reserve.lua)
-- ARGV[1] the most orders to look at in this call (whole entries: see above)
-- ARGV[2] how long a held order is left alone, in milliseconds
-- Returns {{order_id, record, ...}, {order_id, record, ...}, passed}: the
-- orders this call expired, those it held, and how many it passed over.
local now = now_ms()
local limit = tonumber(ARGV[1])
local due = redis.call('ZRANGE', KEYS[4], '-inf', now, 'BYSCORE', 'LIMIT', 0, limit)
local expired = {}
local held = {}
local looked, passed = 0, 0
for _, entry in ipairs(due) do
  if looked >= limit then
    break
  end
  -- Out first: a held order's own entry may be this very member.
  redis.call('ZREM', KEYS[4], entry)
  for order_id in string.gmatch(entry, '%S+') do
    looked = looked + 1
    local order, text = load_order(KEYS[5], order_id)
    if order and order.status == 'pending_payment' then
      if order.prepay_id then
        redis.call('ZADD', KEYS[4], now + tonumber(ARGV[2]), order_id)
        held[#held + 1] = order_id
        held[#held + 1] = text
      else
        order.status = 'expired'
        local record = save_order(KEYS[5], order_id, order)
        release_units(KEYS[1], KEYS[2], KEYS[3], order.user_id, tonumber(order.quantity), 'expired',
          KEYS[7], KEYS[8])
        redis.call('HINCRBY', KEYS[6], order.user_id, 1)
        expired[#expired + 1] = order_id
        expired[#expired + 1] = record
      end
    else
      passed = passed + 1
    end
  end
end
return {expired, held, passed}
