-- producer/broker/events.py: _STARTED
-- A job record's transitions, exactly once each however often they are announced.
-- KEYS: job record, its batch (the record again when none), its tenant's in-flight set.
-- STARTED: ARGV time. Returns 1 when the record went PENDING → STARTED, else 0.
if redis.call('hget', KEYS[1], 'state') ~= 'PENDING' then return 0 end
redis.call('hset', KEYS[1], 'state', 'STARTED', 'started_at', ARGV[1])
if KEYS[2] ~= KEYS[1] and redis.call('exists', KEYS[2]) == 1 then redis.call('hincrby', KEYS[2], 'running', 1) end
return 1
