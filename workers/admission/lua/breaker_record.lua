local key, window = KEYS[1], KEYS[2]
local ok, size, ratio, min_calls = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]),
  tonumber(ARGV[4])
local base, max_open, now = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local open_until = tonumber(redis.call('HGET', key, 'open_until')) or 0
if open_until > 0 then
  if ok == 1 then
    redis.call('DEL', key, window)
    return 'closed'
  end
  if now < open_until then return 'open' end
  local interval = math.min(max_open, (tonumber(redis.call('HGET', key, 'interval')) or base) * 2)
  redis.call('HSET', key, 'open_until', tostring(now + interval), 'interval', tostring(interval),
             'probe_until', '0')
  return 'open'
end
redis.call('LPUSH', window, ok)
redis.call('LTRIM', window, 0, size - 1)
redis.call('EXPIRE', window, 3600)
local outcomes = redis.call('LRANGE', window, 0, -1)
local failures = 0
for _, v in ipairs(outcomes) do if v == '0' then failures = failures + 1 end end
if #outcomes >= min_calls and failures >= ratio * #outcomes then
  redis.call('HSET', key, 'open_until', tostring(now + base), 'interval', tostring(base),
             'probe_until', '0')
  redis.call('EXPIRE', key, 86400)
  redis.call('DEL', window)
  return 'open'
end
return 'closed'
