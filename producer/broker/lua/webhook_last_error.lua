-- producer/notifier.py: the last webhook error on the job's API record, if it still exists.
-- KEYS: the job record. ARGV: the error.
if redis.call('exists', KEYS[1]) == 1 then redis.call('hset', KEYS[1], 'webhook_last_error', ARGV[1]) end
