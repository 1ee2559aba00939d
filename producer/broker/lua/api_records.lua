-- producer/api/app.py: _RECORDS
-- Write the same fields into many job records, each with its TTL: one command for a whole batch.
-- KEYS: the records. ARGV: TTL (s), then field, value, field, value, ...
for _, key in ipairs(KEYS) do
  redis.call('hset', key, unpack(ARGV, 2))
  redis.call('expire', key, ARGV[1])
end
return #KEYS
