-- worker/runtime/guard.py: _COMMIT
-- End the job, only while holding the lease: done marker, runs counter and lease in one step.
-- KEYS: lease, done, runs. ARGV: lease value, final state JSON, expiry (s).
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('set', KEYS[2], ARGV[2], 'EX', ARGV[3])
redis.call('del', KEYS[3], KEYS[1])
return 1
