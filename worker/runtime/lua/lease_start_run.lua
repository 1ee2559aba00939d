-- worker/runtime/guard.py: _START_RUN
-- Count a run start, only while holding the lease. KEYS: lease, runs set. ARGV: lease value,
-- expiry (s). Returns how many runs started and never ended or stepped aside (this one included),
-- or -1 when the lease is not this run's.
if redis.call('get', KEYS[1]) ~= ARGV[1] then return -1 end
redis.call('sadd', KEYS[2], ARGV[1])
redis.call('expire', KEYS[2], ARGV[2])
return redis.call('scard', KEYS[2])
