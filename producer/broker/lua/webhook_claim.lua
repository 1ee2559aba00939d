-- producer/notifier.py: claim up to ARGV[3] due events for one attempt each: their due time moves to
-- the claim's expiry, so no other notifier takes them meanwhile and a notifier that dies
-- mid-attempt leaves them due again after it; the claim's token says whose attempt it is.
-- KEYS: due zset, pending hash, claims hash. ARGV: now (epoch s), claim expiry (epoch s), most to
-- claim, token. Returns event id, delivery JSON, event id, delivery JSON, ...
local ids = redis.call('zrangebyscore', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  local delivery = redis.call('hget', KEYS[2], id)
  if delivery then
    redis.call('zadd', KEYS[1], ARGV[2], id)
    redis.call('hset', KEYS[3], id, ARGV[4])
    table.insert(out, id)
    table.insert(out, delivery)
  else
    redis.call('zrem', KEYS[1], id)
    redis.call('hdel', KEYS[3], id)
  end
end
return out
