-- A consumer acknowledges (or rejects) deliveries: kombu's unacked records and ours go.
-- KEYS[1] kombu's unacked_index zset, KEYS[2] kombu's unacked hash, KEYS[3] the held set
-- ARGV the delivery tags (one, or every acknowledgement that waited for the last to be sent)
redis.call('ZREM', KEYS[1], unpack(ARGV))
redis.call('HDEL', KEYS[2], unpack(ARGV))
redis.call('SREM', KEYS[3], unpack(ARGV))
return #ARGV
