local key, promises = KEYS[1], KEYS[2]
local seconds, now = tonumber(ARGV[1]), tonumber(ARGV[2])
local rpm, tpm, burst = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local s = redis.call('HMGET', key, 'r', 't', 'ts', 'cool', 'lrpm', 'ltpm')
if rpm <= 0 then rpm = tonumber(s[5]) or 0 end
if tpm <= 0 then tpm = tonumber(s[6]) or 0 end
local ts = math.max(tonumber(s[3]) or now, now)
local dt = math.max(0, now - (tonumber(s[3]) or now))
local cool = math.max(tonumber(s[4]) or 0, now + seconds)
local span = cool - ts
-- The voided promises' charges are forgiven; what the fleet really spent is not.
redis.call('ZREMRANGEBYSCORE', promises, '-inf', now)
local freq, ftok = 0, 0
for _, member in ipairs(redis.call('ZRANGE', promises, 0, -1)) do
  local _, req, tok = string.match(member, '^(%d+):([%d.]+):([%d.]+)$')
  freq = freq + tonumber(req)
  ftok = ftok + tonumber(tok)
end
local fields = {'cool', tostring(cool), 'ts', tostring(math.max(cool, ts))}
-- A 429 says the API's bucket is about empty now. By the cooldown's end it holds what refilled
-- meanwhile (one request at most is let go then), or less if true-ups left it in debt.
local r, t = tonumber(s[1]), tonumber(s[2])
if r then
  local rate = rpm / 60
  r = math.min(math.max(1, rpm * burst / 60), r + dt * rate) + freq
  r = math.min(math.min(1, (cool - now) * rate), r + span * rate)
  table.insert(fields, 'r'); table.insert(fields, tostring(r))
end
if t then
  local rate = tpm / 60
  t = math.min(math.max(t, tpm * burst / 60), t + dt * rate) + ftok
  t = math.min(0, t + span * rate)
  table.insert(fields, 't'); table.insert(fields, tostring(t))
end
redis.call('HSET', key, unpack(fields))
redis.call('HINCRBY', key, 'epoch', 1)
redis.call('DEL', promises)
redis.call('EXPIRE', key, 86400)
return 1
