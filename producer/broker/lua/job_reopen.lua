-- producer/broker/ending.py: _REOPEN
-- Undo a job's end so that it runs again (a dead letter sent again): the inverse of job_end.lua.
-- KEYS: 1 done marker, 2 runs, 3 cancel flag, 4 job record, 5 its batch (the record again when
-- none), 6 its tenant's in-flight set, 7 the progress marker. ARGV: 1 job id, 2 time (epoch s).
-- Returns the state the job had ended with ('' when it had not ended).
local done = redis.call('get', KEYS[1])
redis.call('del', KEYS[1], KEYS[2], KEYS[3], KEYS[7])
local was = redis.call('hget', KEYS[4], 'state')
if was == 'SUCCESS' or was == 'FAILURE' or was == 'REVOKED' then
  redis.call('hset', KEYS[4], 'state', 'PENDING')
  redis.call('hdel', KEYS[4], 'finished_at', 'started_at')
  redis.call('zadd', KEYS[6], ARGV[2], ARGV[1])
  if KEYS[5] ~= KEYS[4] and redis.call('exists', KEYS[5]) == 1 then
    redis.call('hincrby', KEYS[5], string.lower(was), -1)
    redis.call('hincrby', KEYS[5], 'ended', -1)
    redis.call('hdel', KEYS[5], 'announced', 'announced_by')
  end
end
if not done then return '' end
local ok, final = pcall(cjson.decode, done)
if ok and type(final) == 'table' and final.state then return final.state end
return '?'
