local key, promises = KEYS[1], KEYS[2]
local rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2])
local nreq, ntok = tonumber(ARGV[3]), tonumber(ARGV[4])
local burst, now, max_wait = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local s = redis.call('HMGET', key, 'r', 't', 'ts', 'cool', 'lrpm', 'ltpm', 'epoch')
if rpm <= 0 then rpm = tonumber(s[5]) or 0 end
if tpm <= 0 then tpm = tonumber(s[6]) or 0 end
local ts = math.max(tonumber(s[3]) or now, now)
local dt = math.max(0, now - (tonumber(s[3]) or now))
local base = ts - now
local r, t = tonumber(s[1]), tonumber(s[2])
local wait = 0
local rcap, tcap = 0, 0
if rpm > 0 then
  rcap = math.max(nreq, rpm * burst / 60)
  if r == nil then r = rcap end
  r = math.min(rcap, r + dt * rpm / 60)
  if r < nreq then wait = math.max(wait, (nreq - r) * 60 / rpm) end
end
if tpm > 0 then
  if ntok > tpm then return {-1, '0', s[7] or '0'} end
  tcap = math.max(ntok, tpm * burst / 60)
  if t == nil then t = tcap end
  t = math.min(tcap, t + dt * tpm / 60)
  if t < ntok then wait = math.max(wait, (ntok - t) * 60 / tpm) end
end
wait = wait + base
local cool = tonumber(s[4]) or 0
if cool > now then wait = math.max(wait, cool - now) end
local status = 0
if wait <= max_wait then
  status = 1
  -- A budget that is not the one that sets the slot may fill up before the slot; the API's
  -- bucket loses what it cannot hold until then, so ours loses it too.
  local ahead = wait - base
  if rpm > 0 then r = r - nreq - math.max(0, r + ahead * rpm / 60 - rcap) end
  if tpm > 0 then t = t - ntok - math.max(0, t + ahead * tpm / 60 - tcap) end
end
local fields = {'ts', tostring(ts)}
if r ~= nil then table.insert(fields, 'r'); table.insert(fields, tostring(r)) end
if t ~= nil then table.insert(fields, 't'); table.insert(fields, tostring(t)) end
redis.call('HSET', key, unpack(fields))
redis.call('EXPIRE', key, 86400)
redis.call('ZREMRANGEBYSCORE', promises, '-inf', now)
if status == 1 and wait > 0 then
  local seq = redis.call('HINCRBY', key, 'seq', 1)
  local req = 0
  local tok = 0
  if rpm > 0 then req = nreq end
  if tpm > 0 then tok = ntok end
  redis.call('ZADD', promises, now + wait, seq .. ':' .. req .. ':' .. tok)
  redis.call('EXPIRE', promises, 86400)
end
return {status, tostring(wait), s[7] or '0'}
