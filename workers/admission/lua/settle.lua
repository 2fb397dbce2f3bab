local key, promises = KEYS[1], KEYS[2]
local rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2])
local dtok = tonumber(ARGV[3])
local rem_r, rem_t = tonumber(ARGV[4]), tonumber(ARGV[5])
local lim_r, lim_t = tonumber(ARGV[6]), tonumber(ARGV[7])
local burst, now = tonumber(ARGV[8]), tonumber(ARGV[9])
local answered, request_id = tonumber(ARGV[10]), ARGV[11]
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local old = redis.call('HMGET', key, 'lrpm', 'ltpm')
local old_r, old_t = tonumber(old[1]) or 0, tonumber(old[2]) or 0
local void = false
if lim_r > 0 or lim_t > 0 or answered == 1 then
  -- The answer says what the limits are now. A success names every limit there is, so a
  -- kind it leaves out has none; an error may name only the one it hit.
  local new_r, new_t = old_r, old_t
  if lim_r > 0 then new_r = lim_r elseif answered == 1 then new_r = 0 end
  if lim_t > 0 then new_t = lim_t elseif answered == 1 then new_t = 0 end
  -- A limit that changed voids the slots promised at the old pace: they queue again.
  void = (old_r > 0 and new_r ~= old_r) or (old_t > 0 and new_t ~= old_t)
  local source = 'headers'
  if lim_r <= 0 and lim_t <= 0 then source = 'none' end
  redis.call('HSET', key, 'lrpm', new_r, 'ltpm', new_t, 'lat', tostring(now), 'lsrc', source,
             'lreq', request_id)
  redis.call('HDEL', key, 'probe', 'pat')
  old_r, old_t = new_r, new_t
elseif redis.call('HGET', key, 'probe') then
  -- An error that says nothing of the limits: the next call probes again.
  redis.call('HDEL', key, 'probe', 'pat')
end
if rpm <= 0 then rpm = old_r end
if tpm <= 0 then tpm = old_t end
local s = redis.call('HMGET', key, 'r', 't', 'ts')
local ts = math.max(tonumber(s[3]) or now, now)
local dt = math.max(0, now - (tonumber(s[3]) or now))
local r, t = tonumber(s[1]), tonumber(s[2])
local fields = {'ts', tostring(ts)}
local freq, ftok = 0, 0
if dtok > 0 or void then
  redis.call('ZREMRANGEBYSCORE', promises, '-inf', now)
  local pending = redis.call('ZRANGE', promises, 0, -1)
  for _, member in ipairs(pending) do
    local _, req, tok = string.match(member, '^(%d+):([%d.]+):([%d.]+)$')
    freq = freq + tonumber(req)
    ftok = ftok + tonumber(tok)
  end
  if #pending > 0 then
    redis.call('DEL', promises)
    redis.call('HINCRBY', key, 'epoch', 1)
  end
end
-- Refill like acquire, but never clamp a level below where it stands (a large request may
-- have raised it past the burst).
if rpm > 0 then
  local cap = math.max(1, rpm * burst / 60)
  r = r or cap
  r = math.min(math.max(cap, r), r + dt * rpm / 60) + freq
  if rem_r >= 0 and rem_r < r then r = rem_r end
  table.insert(fields, 'r'); table.insert(fields, tostring(r))
end
if tpm > 0 then
  local cap = tpm * burst / 60
  t = t or cap
  t = math.min(math.max(cap, t), t + dt * tpm / 60) + ftok - dtok
  if rem_t >= 0 and rem_t < t then t = rem_t end
  table.insert(fields, 't'); table.insert(fields, tostring(t))
end
redis.call('HSET', key, unpack(fields))
redis.call('EXPIRE', key, 86400)
return 1
