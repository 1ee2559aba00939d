-- producer/broker/deadletters.py: _RECORD
-- Add the entry, then drop entries older than the TTL and the oldest beyond the cap; return how
-- many were dropped. KEYS: hash, index. ARGV: job id, entry, now (integer microseconds), ttl (s), max.
-- The index's score is the arrival order: the caller's clock in microseconds, but always above every
-- score already there, so entries that arrive in the same microsecond (a burst) or from a worker
-- whose clock is behind still sort by arrival, and the cap drops exactly the oldest arrivals.
local now = tonumber(ARGV[3])
local last = redis.call('zrange', KEYS[2], -1, -1, 'WITHSCORES')
local score = now
if #last == 2 and tonumber(last[2]) >= score then score = tonumber(last[2]) + 1 end
redis.call('hset', KEYS[1], ARGV[1], ARGV[2])
redis.call('zadd', KEYS[2], score, ARGV[1])
local expired = redis.call('zrangebyscore', KEYS[2], '-inf', now - tonumber(ARGV[4]) * 1000000)
local over = redis.call('zcard', KEYS[2]) - #expired - tonumber(ARGV[5])
local dropped = expired
if over > 0 then
  local oldest = redis.call('zrange', KEYS[2], #expired, #expired + over - 1)
  for _, id in ipairs(oldest) do table.insert(dropped, id) end
end
for _, id in ipairs(dropped) do
  redis.call('hdel', KEYS[1], id)
  redis.call('zrem', KEYS[2], id)
end
redis.call('expire', KEYS[1], ARGV[4])
redis.call('expire', KEYS[2], ARGV[4])
return #dropped
