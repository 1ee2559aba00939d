-- producer/notifier.py: after a failed attempt, the event's next attempt at ARGV[3], only from the
-- holder of its current claim (an attempt that outlived its claim changes nothing).
-- KEYS: due zset, pending hash, claims hash. ARGV: event id, delivery JSON, due (epoch s), token.
-- Returns 1 when the next attempt was set.
if redis.call('hget', KEYS[3], ARGV[1]) ~= ARGV[4] then return 0 end
if redis.call('hexists', KEYS[2], ARGV[1]) == 0 then return 0 end
redis.call('hset', KEYS[2], ARGV[1], ARGV[2])
redis.call('zadd', KEYS[1], ARGV[3], ARGV[1])
redis.call('hdel', KEYS[3], ARGV[1])
return 1
