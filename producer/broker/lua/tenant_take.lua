-- producer/tenants.py: _TAKE
-- Token bucket: refill at ARGV[1] tokens/s up to ARGV[2], take one. KEYS: the bucket.
-- Returns 0 when taken, else the seconds until a token is there.
local rate, burst, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tokens = tonumber(redis.call('hget', KEYS[1], 'tokens') or burst)
local at = tonumber(redis.call('hget', KEYS[1], 'at') or now)
tokens = math.min(burst, tokens + (now - at) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('hset', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('expire', KEYS[1], 60)
return tostring(wait)
