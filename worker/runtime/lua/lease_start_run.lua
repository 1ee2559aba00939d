-- worker/runtime/guard.py: _START_RUN
-- Count a run start, only while holding the lease. KEYS: lease, runs. Returns the count or -1.
if redis.call('get', KEYS[1]) ~= ARGV[1] then return -1 end
local n = redis.call('incr', KEYS[2])
redis.call('expire', KEYS[2], ARGV[2])
return n
