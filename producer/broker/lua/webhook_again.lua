-- producer/notifier.py: after a failed attempt, the event's next attempt at ARGV[3], if it is
-- still being delivered. KEYS: due zset, pending hash. ARGV: event id, delivery JSON, due (epoch s).
if redis.call('hexists', KEYS[2], ARGV[1]) == 0 then return 0 end
redis.call('hset', KEYS[2], ARGV[1], ARGV[2])
redis.call('zadd', KEYS[1], ARGV[3], ARGV[1])
return 1
