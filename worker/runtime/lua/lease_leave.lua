-- worker/runtime/guard.py: _LEAVE
-- A run that stops without ending the job (it stepped aside, or handed the job back) is no crash:
-- it leaves the runs set. KEYS: runs set. ARGV: lease value. Returns 1 if it was there.
return redis.call('srem', KEYS[1], ARGV[1])
