-- producer/notifier.py: take an event into delivery, once per event id, whatever copies of its
-- message arrive (a consumer with a shorter visibility timeout may hand one back meanwhile).
-- KEYS: pending hash, due zset, done marker. ARGV: event id, delivery JSON, first attempt (epoch s).
-- Returns 1 when scheduled, 0 when the event is already being delivered or has ended.
if redis.call('exists', KEYS[3]) == 1 then return 0 end
if redis.call('hsetnx', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('zadd', KEYS[2], ARGV[3], ARGV[1])
return 1
