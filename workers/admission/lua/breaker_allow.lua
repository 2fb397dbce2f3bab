local key = KEYS[1]
local probe_ttl, now, caller = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3] or ''
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local open_until = tonumber(redis.call('HGET', key, 'open_until')) or 0
if open_until == 0 then return {1, '0'} end
if now < open_until then return {0, tostring(open_until - now)} end
local probe_until = tonumber(redis.call('HGET', key, 'probe_until')) or 0
if now < probe_until then return {0, tostring(probe_until - now)} end
-- Half open: this caller probes. Its name lets its own limiter reservation through the
-- breaker's gate in acquire.lua, and no other.
redis.call('HSET', key, 'probe_until', tostring(now + probe_ttl), 'probe_by', caller)
return {2, '0'}
