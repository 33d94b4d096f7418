-- Put an item a batch holds back in its lane's pending list, for a later batch.
-- KEYS[1] where hash, KEYS[2] pending list, KEYS[3] items hash
-- ARGV[1] cid, ARGV[2] batch id, ARGV[3] the item's new JSON
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], 'pending')
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
redis.call('RPUSH', KEYS[2], ARGV[1])
return 1
