-- producer/notifier.py: count a webhook outcome on the job's API record, if it still exists.
-- KEYS: the job record. ARGV: the field (webhook_delivered, webhook_failed).
if redis.call('exists', KEYS[1]) == 1 then redis.call('hincrby', KEYS[1], ARGV[1], 1) end
