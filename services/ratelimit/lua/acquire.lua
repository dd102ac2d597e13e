-- One quota decision across all the pools an endpoint draws from: all or nothing, on Redis time.
-- KEYS[1..n]: the pool hashes (ratelimit:pool:<name>); KEYS[n+1..2n]: the pools' client sets
--   (ratelimit:clients:<name>, client_id -> time of its last grant).
-- ARGV: now_us ('' = Redis TIME), cost, max_wait_us, window_us, slots, rate_factor, reserve (1: the request
--       may hold a future slot; only critical requests may), client_id ('' = not counted), client_ttl_us,
--       then per pool: rate (req/s, exchange figure), burst, weight, shed_threshold_pct.
-- Pool hash fields: tat (theoretical arrival time, us), blocked_until (us), o_rate/o_burst (runtime
-- overrides), w<s>/c<s> (ring of `slots`+1 usage buckets: bucket index and cost granted in it).
-- Returns {code, wait_us, retry_after_us, pool_index, remaining, util_bp, now_us} followed, per pool, by
-- {util_bp, remaining, blocked_until_us, rate_millis, burst, overridden (1/0), clients, deferred (1/0)}
-- (after the grant when granted). A reservation is charged only to the pools that set its time; the
-- others are `deferred`: the service takes them when the slot comes, so their idle capacity stays usable.
-- code: 1 granted, 0 denied by the hard limit, 2 shed by priority headroom, 3 closed by a penalty,
--       4 cost above the pool's burst (can never be granted), 5 peek (cost 0: nothing is written).

local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local cost = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])
local window = tonumber(ARGV[4])
local slots = tonumber(ARGV[5])
local factor = tonumber(ARGV[6])
if ARGV[7] ~= '1' then max_wait = 0 end
local client = ARGV[8]
local client_ttl = tonumber(ARGV[9])
local HEAD = 9
local slot_us = window / slots
local idx = math.floor(now / slot_us)
local frac = (now - idx * slot_us) / slot_us

local fields = {'tat', 'blocked_until', 'o_rate', 'o_burst'}
for s = 0, slots do
  fields[#fields + 1] = 'w' .. s
  fields[#fields + 1] = 'c' .. s
end

local n = #KEYS / 2
local pools = {}
local wait = 0
local deny_code, deny_after, deny_pool = nil, 0, 0

for i = 1, n do
  local a = HEAD + (i - 1) * 4
  local v = redis.call('HMGET', KEYS[i], unpack(fields))
  local rate = tonumber(v[3]) or tonumber(ARGV[a + 1])
  local burst = tonumber(v[4]) or tonumber(ARGV[a + 2])
  local amount = cost * tonumber(ARGV[a + 3])
  local threshold = tonumber(ARGV[a + 4])
  local interval = 1000000 / (rate * factor)
  local capacity = rate * factor * window / 1000000

  -- usage by age: by_age[k] is the cost granted k buckets ago (k = slots is leaving the window)
  local used, by_age = 0, {}
  for s = 0, slots do
    local w = tonumber(v[5 + 2 * s])
    if w then
      local age = idx - w
      local c = tonumber(v[6 + 2 * s])
      if age >= 0 and age < slots then
        used = used + c
        by_age[age] = c
      elseif age == slots then
        used = used + c * (1 - frac)
        by_age[age] = c * (1 - frac)
      end
    end
  end
  local util = used / capacity * 100

  local code, after, need = nil, 0, 0
  local blocked = tonumber(v[2]) or 0
  if cost == 0 then
    code = nil
  elseif amount > burst then
    code = 4
  elseif blocked - now > max_wait then
    code, after = 3, blocked - now
  else
    if util > threshold then
      -- time until enough old buckets leave the window to bring utilization under the threshold
      local excess = used - threshold / 100 * capacity
      local k = slots
      while excess > 0 and k >= 0 do
        excess = excess - (by_age[k] or 0)
        after = (slots - k + 1 - frac) * slot_us
        k = k - 1
      end
      code = 2
    else
      local tat = tonumber(v[1]) or now
      if tat < now then tat = now end
      need = tat + amount * interval - now - burst * interval
      if blocked - now > need then need = blocked - now end
      -- 1 us of slack for floating-point noise in the stored TAT
      if need > max_wait + 1 then
        code, after = 0, need
      elseif need > wait + 1 then
        wait = need
      end
    end
  end
  if code and (deny_code == nil or code == 4 or (deny_code ~= 4 and after > deny_after)) then
    deny_code, deny_after, deny_pool = code, after, i
  end
  pools[i] = {v = v, rate = rate, burst = burst, amount = amount, interval = interval,
              capacity = capacity, used = used, need = need}
end

local function clients_of(i)
  return redis.call('ZCOUNT', KEYS[n + i], now - client_ttl, '+inf')
end

local function pool_state(out, p, util_bp, left, clients, deferred)
  out[#out + 1] = util_bp
  out[#out + 1] = left
  out[#out + 1] = tonumber(p.v[2]) or 0
  out[#out + 1] = math.floor(p.rate * 1000 + 0.5)
  out[#out + 1] = p.burst
  out[#out + 1] = p.v[3] and 1 or 0
  out[#out + 1] = clients
  out[#out + 1] = deferred
end

local function left_at(p, tat, at)
  if tat < at then tat = at end
  return math.floor((p.burst * p.interval - (tat - at)) / p.interval)
end

if deny_code or cost == 0 then
  local out = {cost == 0 and 5 or deny_code, 0, math.ceil(deny_after), deny_pool, 0, 0, now}
  for i = 1, n do
    local p = pools[i]
    pool_state(out, p, math.floor(p.used / p.capacity * 10000), left_at(p, tonumber(p.v[1]) or now, now),
      clients_of(i), 0)
  end
  return out
end

-- granted: reserve at t = now + wait in the pools that set t; record the cost in the current usage bucket
local t = now + wait
local slot = idx % (slots + 1)
local remaining, max_util = nil, 0
local out = {1, math.ceil(wait), 0, 0, 0, 0, now}
for i = 1, n do
  local p = pools[i]
  local deferred = wait > 0 and p.need + 1 < wait
  local util_bp, left = math.floor(p.used / p.capacity * 10000), left_at(p, tonumber(p.v[1]) or now, now)
  if not deferred then
    local tat = tonumber(p.v[1]) or t
    if tat < t then tat = t end
    local new_tat = tat + p.amount * p.interval
    local bucket_count = 0
    if tonumber(p.v[5 + 2 * slot]) == idx then bucket_count = tonumber(p.v[6 + 2 * slot]) end
    -- %.17g keeps the double exact: Redis would print a bare number with 14 digits, losing microseconds
    redis.call('HSET', KEYS[i], 'tat', string.format('%.17g', new_tat), 'w' .. slot, string.format('%.0f', idx),
      'c' .. slot, bucket_count + p.amount)
    left = left_at(p, new_tat, t)
    util_bp = math.floor((p.used + p.amount) / p.capacity * 10000)
  end
  local clients = 0
  if client ~= '' then
    redis.call('ZADD', KEYS[n + i], now, client)
    redis.call('ZREMRANGEBYSCORE', KEYS[n + i], '-inf', now - client_ttl)
    redis.call('PEXPIRE', KEYS[n + i], math.ceil(client_ttl / 1000))
    clients = redis.call('ZCARD', KEYS[n + i])
  else
    clients = clients_of(i)
  end
  local left_cost = math.floor(left / (p.amount / cost))
  if remaining == nil or left_cost < remaining then remaining = left_cost end
  if util_bp > 10000 then util_bp = 10000 end
  if util_bp > max_util then max_util = util_bp end
  pool_state(out, p, util_bp, left, clients, deferred and 1 or 0)
end
out[5] = remaining
out[6] = max_util
return out
