-- Forget a consumer that is silent and holds nothing (its held set is gone once empty).
-- KEYS[1] its liveness key, KEYS[2] its held set, KEYS[3] the registry of consumers
-- ARGV[1] the consumer's id. A consumer that beats again re-registers itself.
if redis.call('EXISTS', KEYS[1]) == 0 and redis.call('EXISTS', KEYS[2]) == 0 then
  return redis.call('SREM', KEYS[3], ARGV[1])
end
return 0
