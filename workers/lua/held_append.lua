-- A consumer takes a delivery: kombu's unacked records and ours, in one command.
-- KEYS[1] kombu's unacked_index zset, KEYS[2] kombu's unacked hash, KEYS[3] the consumer's
-- held set, KEYS[4] its liveness key, KEYS[5] the registry of consumers
-- ARGV[1] delivery tag, ARGV[2] now (unix seconds), ARGV[3] the message as kombu stores it,
-- ARGV[4] liveness TTL in seconds, ARGV[5] the consumer's id
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('SET', KEYS[4], 1, 'EX', ARGV[4])
redis.call('SADD', KEYS[5], ARGV[5])
return 1
