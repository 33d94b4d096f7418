-- A consumer takes what is already queued, up to its free prefetch, and records each message
-- as delivered in the same step: kombu's BRPOP pops one message, and only a later round trip
-- records it in unacked, so a worker killed in between loses it. Nothing taken here can be.
-- KEYS[1] kombu's unacked_index zset, KEYS[2] kombu's unacked hash, KEYS[3] the consumer's
-- held set, KEYS[4] its liveness key, KEYS[5] the registry of consumers,
-- KEYS[6..] the queue lists, in the order BRPOP would try them
-- ARGV[1] how many at most, ARGV[2] now (unix seconds), ARGV[3] liveness TTL, ARGV[4] id
-- Returns {list, message, list, message, ...}; the messages as kombu published them.
local left = tonumber(ARGV[1])
local out = {}
for i = 6, #KEYS do
  while left > 0 do
    local raw = redis.call('RPOP', KEYS[i])
    if not raw then break end
    local ok, message = pcall(cjson.decode, raw)
    local props = ok and type(message) == 'table' and message.properties
    local tag = type(props) == 'table' and props.delivery_tag
    local info = type(props) == 'table' and props.delivery_info
    if type(tag) == 'string' and type(info) == 'table' then
      -- What kombu stores in unacked: [payload, exchange, routing key], the payload verbatim.
      local entry = '[' .. raw .. ',' .. cjson.encode(info.exchange or '') .. ','
        .. cjson.encode(info.routing_key or '') .. ']'
      redis.call('ZADD', KEYS[1], ARGV[2], tag)
      redis.call('HSET', KEYS[2], tag, entry)
      redis.call('SADD', KEYS[3], tag)
    end
    out[#out + 1] = KEYS[i]
    out[#out + 1] = raw
    left = left - 1
  end
end
if #out > 0 then
  redis.call('SET', KEYS[4], 1, 'EX', ARGV[3])
  redis.call('SADD', KEYS[5], ARGV[4])
end
return out
