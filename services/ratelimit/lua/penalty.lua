-- Close pools until now + retry_after: every client is refused (or waits) until then.
-- KEYS: pool hashes. ARGV[1]: retry_after_us, ARGV[2]: now_us ('' = Redis TIME).
-- Returns the blocked_until (us) in force for each pool; an earlier penalty never shortens a later one.
local now
if ARGV[2] ~= '' then
  now = tonumber(ARGV[2])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local until_us = now + tonumber(ARGV[1])
local out = {}
for i = 1, #KEYS do
  local current = tonumber(redis.call('HGET', KEYS[i], 'blocked_until')) or 0
  if until_us > current then
    redis.call('HSET', KEYS[i], 'blocked_until', string.format('%.0f', until_us))
    current = until_us
  end
  out[i] = current
end
return out
