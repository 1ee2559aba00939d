-- worker/runtime/recovery.py: _RESTORE
-- Put an abandoned message back, only if no lease appeared and it is still the same unacked entry.
-- KEYS: unacked, unacked_index, lease, target list. ARGV: tag, expected entry, new payload.
if redis.call('exists', KEYS[3]) == 1 then return 0 end
if redis.call('hget', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('hdel', KEYS[1], ARGV[1])
redis.call('zrem', KEYS[2], ARGV[1])
redis.call('rpush', KEYS[4], ARGV[3])
return 1
