-- Drop a claim only if this task still holds it (another may have taken it after expiry).
-- KEYS[1] claim key, ARGV[1] owner (task id)
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
