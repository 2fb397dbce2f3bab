-- A probe whose call was not sent after all (the breaker or the run's budget said no): the
-- next call probes instead, unless the probe has changed hands meanwhile.
local key, probe = KEYS[1], ARGV[1]
if redis.call('HGET', key, 'probe') == probe then
  redis.call('HDEL', key, 'probe', 'pat')
  return 1
end
return 0
