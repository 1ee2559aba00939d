-- producer/notifier.py: the event's delivery ended (delivered, or given up), from the holder of its
-- current claim: it leaves the schedule, and a marker keeps late copies of its message from
-- starting it again. KEYS: due zset, pending hash, done marker, claims hash.
-- ARGV: event id, outcome, marker TTL (s), token. Returns 1 when this call ended it.
if redis.call('hget', KEYS[4], ARGV[1]) ~= ARGV[4] then return 0 end
redis.call('zrem', KEYS[1], ARGV[1])
redis.call('hdel', KEYS[4], ARGV[1])
local was = redis.call('hdel', KEYS[2], ARGV[1])
redis.call('set', KEYS[3], ARGV[2], 'EX', ARGV[3])
return was
