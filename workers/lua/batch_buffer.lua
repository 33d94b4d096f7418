-- Buffer one item of a lane (job x model) for a provider batch.
-- KEYS[1] items hash (cid -> item JSON), KEYS[2] where hash (cid -> 'pending' | batch id),
-- KEYS[3] pending list; ARGV[1] cid, ARGV[2] item JSON, ARGV[3] expiry seconds
-- Returns the pending count, or -1 when the item is already in the lane (redelivery).
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return -1 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], 'pending')
local n = redis.call('RPUSH', KEYS[3], ARGV[1])
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[3]) end
return n
