-- queue_poll: admits whoever's turn has come, then answers one shopper's
-- place in a queued sale's line, in one step on the Redis clock.
--
-- Admission walks the line from the front: positions up to `cursor` are
-- admitted. From the opening, at most admit_per_sec per second (banked
-- for one second at most), and only while the admissions outstanding
-- (granted, minus those whose purchase token bought, minus those that
-- expired unused) stay under ceil(remaining * headroom% / per_user_limit).
-- An admission lasts token_ttl_secs; one unused `grace` after that
-- frees its place (the shopper leaves the line and may join again at the
-- back). Positions are fixed from the opening: the pre-queue joined before
-- it, later joiners only ever go behind, and no member is removed.
-- The token of the shopper at position p has the id 'q<p>'; on a queued
-- sale only these tokens buy, so HLEN of the purchase tokens that bought
-- counts the admissions used.
-- KEYS[1] fs:{sale}:sale    hash: the sale's fields
-- KEYS[2] fs:{sale}:stock   string: units remaining
-- KEYS[3] fs:{sale}:stats   hash: reserved, paid, ... (units)
-- KEYS[4] fs:{sale}:ptokens hash: purchase token id -> the order it bought
-- KEYS[5] fs:{sale}:q:line  sorted set: the line (see queue_join.lua)
-- KEYS[6] fs:{sale}:q:who   hash: shopper -> their member of the line
-- KEYS[7] fs:{sale}:q:adm   hash: admitted shopper -> admission expiry (ms)
-- KEYS[8] fs:{sale}:q:exp   sorted set: admitted member -> expiry (ms), until freed
-- KEYS[9] fs:{sale}:q:meta  hash: seq, cursor, granted, expired, tick_us
-- ARGV[1] shopper id
-- ARGV[2] headroom, percent
-- ARGV[3] grace after an admission's expiry, ms
-- ARGV[4] the most places one poll frees (the rest wait for the next
--         polls: one script's work stays bounded)
-- Returns {'not_found'} | {'not_queued'} | {'absent'} |
--   {status, now, starts_at, admit_per_sec, position, ahead, expires_at}
--   with status waiting | admitted | sold_out | ended, position and ahead
--   -1 before the opening, expires_at 0 unless admitted.
local s, refusal = queued_sale(KEYS[1], 'admit_per_sec', 'token_ttl_secs', 'per_user_limit')
if not s then
  return refusal
end
local now = now_ms()
local starts_at = tonumber(s[2])
local rate = tonumber(s[5])
local ended = s[1] ~= 'scheduled' or now >= tonumber(s[3])
local remaining = tonumber(redis.call('GET', KEYS[2]) or '0')

local function meta(field)
  return tonumber(redis.call('HGET', KEYS[9], field) or '0')
end

-- The shopper of a member: what follows its first ':'.
local function shopper_of(member)
  return string.sub(member, string.find(member, ':', 1, true) + 1)
end

-- Frees the places of admissions that expired unused.
local function free_expired()
  local due = redis.call('ZRANGEBYSCORE', KEYS[8], '-inf', now - tonumber(ARGV[3]),
    'LIMIT', 0, tonumber(ARGV[4]))
  for _, member in ipairs(due) do
    redis.call('ZREM', KEYS[8], member)
    local token = 'q' .. (redis.call('ZRANK', KEYS[5], member) + 1)
    if redis.call('HEXISTS', KEYS[4], token) == 0 then
      redis.call('HINCRBY', KEYS[9], 'expired', 1)
      local shopper = shopper_of(member)
      if redis.call('HGET', KEYS[6], shopper) == member then
        redis.call('HDEL', KEYS[6], shopper)
        redis.call('HDEL', KEYS[7], shopper)
      end
    end
  end
end

-- The admission budget is kept in microseconds of the store's clock
-- (`tick_us`, up to where admissions were counted; a line started by an
-- earlier build kept milliseconds in `tick`): one admission is
-- 1,000,000 / rate of them, and a step of n moves tick_us on by n of those
-- rounded up, so however often the line is polled and whatever the rate
-- (one admission may take under a millisecond) it never runs ahead.
local function admit()
  local now_us = now * 1000
  local last = tonumber(redis.call('HGET', KEYS[9], 'tick_us') or '')
  if not last then
    last = tonumber(redis.call('HGET', KEYS[9], 'tick') or starts_at) * 1000
  end
  if now_us - last > 1000000 then
    last = now_us - 1000000
  end
  local allowance = math.floor((now_us - last) * rate / 1000000)
  if allowance < 1 then
    return
  end
  local cursor = meta('cursor')
  local granted = meta('granted')
  local outstanding = granted - redis.call('HLEN', KEYS[4]) - meta('expired')
  local capacity = 0
  if remaining > 0 then
    capacity = math.ceil(remaining * tonumber(ARGV[2]) / 100 / tonumber(s[7]))
  end
  local n = math.min(allowance, capacity - outstanding, redis.call('ZCARD', KEYS[5]) - cursor)
  if n > 0 then
    local expires_at = math.floor((now + tonumber(s[6]) * 1000) / 1000) * 1000
    for _, member in ipairs(redis.call('ZRANGE', KEYS[5], cursor, cursor + n - 1)) do
      redis.call('ZADD', KEYS[8], expires_at, member)
      redis.call('HSET', KEYS[7], shopper_of(member), expires_at)
    end
    redis.call('HSET', KEYS[9], 'cursor', cursor + n, 'granted', granted + n)
  else
    n = 0
  end
  -- Rate-bound: keep the fraction of an admission earned; bound by stock
  -- or by the line: bank nothing.
  local tick_us = now_us
  if n == allowance then
    tick_us = last + math.ceil(n * 1000000 / rate)
  end
  redis.call('HSET', KEYS[9], 'tick_us', string.format('%d', tick_us))
end

if not ended and now >= starts_at then
  free_expired()
  admit()
end

local member = redis.call('HGET', KEYS[6], ARGV[1])
if not member then
  return {'absent'}
end
local function answer(status, position, ahead, expires_at)
  return {status, now, starts_at, rate, position, ahead, expires_at}
end
if ended then
  return answer('ended', -1, -1, 0)
end
if now < starts_at then
  return answer('waiting', -1, -1, 0)
end
local position = redis.call('ZRANK', KEYS[5], member) + 1
local cursor = meta('cursor')
if position <= cursor then
  return answer('admitted', position, 0, tonumber(redis.call('HGET', KEYS[7], ARGV[1]) or '0'))
end
local reserved = tonumber(redis.call('HGET', KEYS[3], 'reserved') or '0')
if remaining <= 0 and reserved <= 0 then
  return answer('sold_out', position, position - 1 - cursor, 0)
end
return answer('waiting', position, position - 1 - cursor, 0)
