local key, promises = KEYS[1], KEYS[2]
local rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2])
local nreq, ntok = tonumber(ARGV[3]), tonumber(ARGV[4])
local burst, now, max_wait = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local ttl, hold = tonumber(ARGV[8]), tonumber(ARGV[9])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local s = redis.call('HMGET', key, 'r', 't', 'ts', 'cool', 'lrpm', 'ltpm', 'epoch', 'lat',
                     'probe', 'pat')
local epoch = s[7] or '0'
if KEYS[3] then
  -- The breaker's gate: while it is open, or half open with another caller's probe, a slot
  -- reserved here would go unused (the call parks), so nothing is reserved.
  local b = redis.call('HMGET', KEYS[3], 'open_until', 'probe_by')
  if (tonumber(b[1]) or 0) > 0 and (ARGV[10] == '' or b[2] ~= ARGV[10]) then
    return {3, '0', epoch}
  end
end
local cool = tonumber(s[4]) or 0
local learned = tonumber(s[8])
local fresh = learned ~= nil and now - learned <= ttl
local probing = false
if rpm <= 0 and tpm <= 0 and not fresh then
  -- No budget configured, and none learned lately: one call in the whole fleet probes the
  -- API, and the rest wait for its answer's headers.
  local probe = tonumber(s[9]) or 0
  if probe > now then
    -- Ask again after half the probe's age so far (50 ms to 2 s): few questions while a
    -- slow probe is out, little delay after a fast one.
    local age = now - (tonumber(s[10]) or now)
    return {2, tostring(math.min(2, math.max(0.05, age / 2))), epoch}
  end
  -- The probe keeps to what was learned before, if anything: slots promised then still
  -- stand at the API.
  probing = true
end
if fresh or probing then
  if rpm <= 0 then rpm = tonumber(s[5]) or 0 end
  if tpm <= 0 then tpm = tonumber(s[6]) or 0 end
end
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
  if ntok > tpm then return {-1, '0', epoch} end
  tcap = math.max(ntok, tpm * burst / 60)
  if t == nil then t = tcap end
  t = math.min(tcap, t + dt * tpm / 60)
  if t < ntok then wait = math.max(wait, (ntok - t) * 60 / tpm) end
end
wait = wait + base
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
local probe = ''
if probing and status == 1 then
  probe = tostring(now + wait + hold)
  redis.call('HSET', key, 'probe', probe, 'pat', tostring(now + wait))
end
if status == 1 and wait > 0 then
  local seq = redis.call('HINCRBY', key, 'seq', 1)
  local req = 0
  local tok = 0
  if rpm > 0 then req = nreq end
  if tpm > 0 then tok = ntok end
  redis.call('ZADD', promises, now + wait, seq .. ':' .. req .. ':' .. tok)
  redis.call('EXPIRE', promises, 86400)
end
return {status, tostring(wait), epoch, probe}
