-- worker/runtime/guard.py: _ACQUIRE
-- Take the lease if it is free and the job has not ended, or keep it if it is already ours (a
-- retried call); the worker's claim on the message ends there (the lease speaks for it now).
-- KEYS: lease, done marker, claim. Returns 1 (held), 0 (another run holds it), -1 (ended).
if redis.call('exists', KEYS[2]) == 1 then return -1 end
local cur = redis.call('get', KEYS[1])
if (not cur) or cur == ARGV[1] then
  redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
  redis.call('del', KEYS[3])
  return 1
end
return 0
