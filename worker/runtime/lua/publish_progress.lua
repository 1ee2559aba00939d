-- worker/delivery.py: _PUBLISH_PROGRESS
-- Celery's PROGRESS state, written the way its Redis backend writes states (SET + PUBLISH on the
-- key), unless the job already has a final state. KEYS: the meta key. ARGV: meta JSON, expiry (s).
local current = redis.call('get', KEYS[1])
if current then
  local ok, meta = pcall(cjson.decode, current)
  if ok and (meta.status == 'SUCCESS' or meta.status == 'FAILURE' or meta.status == 'REVOKED') then return 0 end
end
redis.call('set', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('publish', KEYS[1], ARGV[1])
return 1
