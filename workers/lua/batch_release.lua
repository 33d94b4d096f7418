-- An item's record is written: it leaves its lane, if the given batch still holds it.
-- KEYS[1] where hash, KEYS[2] items hash; ARGV[1] cid, ARGV[2] batch id
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
