-- Give one unacknowledged message of a silent consumer back to its queue, at most once.
-- KEYS[1] the consumer's liveness key, KEYS[2] its held set, KEYS[3] kombu's unacked hash,
-- KEYS[4] kombu's unacked_index zset, KEYS[5..] the lists the message goes back to
-- ARGV[1] delivery tag, ARGV[2] the message as kombu restores it (JSON, marked redelivered)
-- Returns 1 restored, 0 dropped from the held set (already acknowledged, or restored by
-- another monitor or by kombu's visibility sweep), -1 left alone (the consumer beats again).
if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
-- SREM is the first claim: a monitor that read the held set before another restored the
-- message must not take it again once its next holder has put the same tag in unacked.
if redis.call('SREM', KEYS[2], ARGV[1]) == 0 then return 0 end
-- Nowhere to put it: never take it out of unacked, kombu's visibility timeout stays in charge.
if #KEYS < 5 then return 0 end
-- HDEL is the claim: of two monitors (or a monitor and an ack) only one removes the entry.
if redis.call('HDEL', KEYS[3], ARGV[1]) == 0 then return 0 end
redis.call('ZREM', KEYS[4], ARGV[1])
-- kombu publishes with LPUSH and consumes with BRPOP: RPUSH puts it at the head, as
-- kombu's own restore_by_tag does.
for i = 5, #KEYS do redis.call('RPUSH', KEYS[i], ARGV[2]) end
return 1
