-- producer/broker/cancellation.py: _CANCEL
-- KEYS: done marker, lease, cancel flag. ARGV: final state JSON, expiry (s).
if redis.call('exists', KEYS[1]) == 1 then return 'ended' end
redis.call('set', KEYS[3], '1', 'EX', ARGV[2])
if redis.call('exists', KEYS[2]) == 1 then return 'stopping' end
redis.call('set', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 'cancelled'
