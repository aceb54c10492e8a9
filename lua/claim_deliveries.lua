-- claim_deliveries: leases the hand-offs to the merchant that are due. Each
-- is pushed back by the lease before it is sent, so no other engine node
-- sends it meanwhile, and one whose sender died is sent again when the lease
-- runs out. The sender removes a delivered one (delivered.lua), or
-- postpones a failed one by its backoff (postpone_delivery.lua, on this
-- same Redis clock).
-- KEYS[1] fs:{sale}:outbox    sorted set: 'event order_id' by due time (ms)
-- KEYS[2] fs:{sale}:attempts  hash: 'event order_id' -> attempts so far
-- ARGV[1] most to lease, ARGV[2] lease (ms): longer than one send may take
-- Returns {member, attempt, ...}.
local now = now_ms()
local due = redis.call('ZRANGE', KEYS[1], '-inf', now, 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[1]))
local leased = {}
for _, member in ipairs(due) do
  redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), member)
  leased[#leased + 1] = member
  leased[#leased + 1] = redis.call('HINCRBY', KEYS[2], member, 1)
end
return leased
