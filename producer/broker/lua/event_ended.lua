-- producer/broker/events.py: _ENDED
-- ENDED: ARGV final state, time, job id. Returns 0 when the record had ended already, else 1.
local was = redis.call('hget', KEYS[1], 'state')
if (not was) or was == 'SUCCESS' or was == 'FAILURE' or was == 'REVOKED' then return 0 end
redis.call('hset', KEYS[1], 'state', ARGV[1], 'finished_at', ARGV[2])
redis.call('zrem', KEYS[3], ARGV[3])
if KEYS[2] ~= KEYS[1] and redis.call('exists', KEYS[2]) == 1 then  -- (an expired batch stays gone)
  if was == 'STARTED' then redis.call('hincrby', KEYS[2], 'running', -1) end
  redis.call('hincrby', KEYS[2], string.lower(ARGV[1]), 1)
  redis.call('hincrby', KEYS[2], 'ended', 1)
end
return 1
