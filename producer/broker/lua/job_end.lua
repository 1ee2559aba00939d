-- producer/broker/ending.py: _END
-- End a job: the one script that writes a final state, everywhere it lives in Redis, at once.
-- KEYS: 1 done marker, 2 lease, 3 runs, 4 cancel flag, 5 events stream, 6 job record,
--       7 its batch (the record again when none), 8 its tenant's in-flight set, 9 webhook list.
-- ARGV: 1 final state JSON, 2 expiry (s), 3 who ends it: 'lease' (ARGV 4 = the run's lease value)
--       or 'none' (no run: a cancel, a revoke, a refused message; it ends only an unheld job),
--       5 '1' to set the cancel flag, 6 event id, 7 event data JSON, 8 stream cap, 9 state,
--       10 time (epoch s), 11 job id, 12 webhook message ('' for none).
-- The job's record (API jobs) also gets the completed event's stream id (completed_event).
-- Returns {outcome, final state JSON, batch completed by this job (0/1), batch completion time}:
-- 'ended' (the first final state stays: the one returned, maybe this very one from a try whose
-- reply was lost), 'held' (another live run holds the job: nothing but the cancel flag written),
-- or 'applied'.
local function batch_by_me(done)
  -- only for a retry of the very end that completed the batch (a later, other end announces nothing)
  if KEYS[7] == KEYS[6] or done ~= ARGV[1] then return 0, '' end
  if redis.call('hget', KEYS[7], 'announced_by') == ARGV[11] then
    return 1, redis.call('hget', KEYS[7], 'announced') or ''
  end
  return 0, ''
end
local done = redis.call('get', KEYS[1])
if done then
  local mine, at = batch_by_me(done)
  return {'ended', done, mine, at}
end
if ARGV[5] == '1' then redis.call('set', KEYS[4], '1', 'EX', ARGV[2]) end
local lease = redis.call('get', KEYS[2])
if lease then
  local held
  if ARGV[3] == 'lease' then held = lease ~= ARGV[4] else held = true end
  if held then return {'held', '', 0, ''} end
end
redis.call('set', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('del', KEYS[2], KEYS[3])
local entry = redis.call('xadd', KEYS[5], 'MAXLEN', '~', ARGV[8], '*',
  'id', ARGV[6], 'type', 'job.completed', 'job_id', ARGV[11], 'data', ARGV[7])
if ARGV[12] ~= '' then redis.call('lpush', KEYS[9], ARGV[12]) end
local completed, completed_at = 0, ''
local was = redis.call('hget', KEYS[6], 'state')
if was and was ~= 'SUCCESS' and was ~= 'FAILURE' and was ~= 'REVOKED' then
  -- completed_event: the end's place in the stream (where an API event stream ends)
  redis.call('hset', KEYS[6], 'state', ARGV[9], 'finished_at', ARGV[10], 'completed_event', entry)
  redis.call('zrem', KEYS[8], ARGV[11])
  if KEYS[7] ~= KEYS[6] and redis.call('exists', KEYS[7]) == 1 then  -- (an expired batch stays gone)
    if was == 'STARTED' then redis.call('hincrby', KEYS[7], 'running', -1) end
    redis.call('hincrby', KEYS[7], string.lower(ARGV[9]), 1)
    local ended = redis.call('hincrby', KEYS[7], 'ended', 1)
    local total = tonumber(redis.call('hget', KEYS[7], 'total') or '1')
    if ended >= total and not redis.call('hget', KEYS[7], 'announced') then
      redis.call('hset', KEYS[7], 'announced', ARGV[10], 'announced_by', ARGV[11])
      completed, completed_at = 1, ARGV[10]
    end
  end
end
return {'applied', ARGV[1], completed, completed_at}
