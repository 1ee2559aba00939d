-- producer/broker/events.py: _PROGRESS
-- A job.progress event once per tenth of the way, whichever run reaches it (a run that takes a
-- job over announces only the tenths not announced yet, so an event id names one payload).
-- Nothing once the job has ended (a stale run's late progress).
-- KEYS: the progress marker, events stream, webhook list (the marker again when none), done marker.
-- ARGV: tenth, expiry (s), event id, job id, data JSON, stream cap, webhook message ('' for none).
-- Returns 1 when announced, 0 when that tenth had been.
if redis.call('exists', KEYS[4]) == 1 then return 0 end
if tonumber(redis.call('get', KEYS[1]) or '0') >= tonumber(ARGV[1]) then return 0 end
redis.call('set', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('xadd', KEYS[2], 'MAXLEN', '~', ARGV[6], '*', 'id', ARGV[3], 'type', 'job.progress', 'job_id', ARGV[4], 'data', ARGV[5])
if ARGV[7] ~= '' then redis.call('lpush', KEYS[3], ARGV[7]) end
return 1
