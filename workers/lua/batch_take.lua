-- Move pending items of a lane into a new batch, in state 'creating'.
-- KEYS[1] pending list, KEYS[2] where hash, KEYS[3] items hash, KEYS[4] the batch's id list,
-- KEYS[5] the batch's meta hash, KEYS[6] the lane's list of batches
-- ARGV[1] batch id, ARGV[2] max items, ARGV[3] max request bytes, ARGV[4] expiry seconds
-- Returns how many items moved (0: nothing pending, and no batch is made).
local bid, max_items, max_bytes = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local moved, bytes = 0, 0
while moved < max_items do
  local cid = redis.call('LPOP', KEYS[1])
  if not cid then break end
  if redis.call('HGET', KEYS[2], cid) == 'pending' then
    local raw = redis.call('HGET', KEYS[3], cid)
    local size = 0
    if raw then size = tonumber(cjson.decode(raw)['size'] or 0) end
    if moved > 0 and bytes + size > max_bytes then
      redis.call('LPUSH', KEYS[1], cid)
      break
    end
    redis.call('HSET', KEYS[2], cid, bid)
    redis.call('RPUSH', KEYS[4], cid)
    moved = moved + 1
    bytes = bytes + size
  end
end
if moved > 0 then
  redis.call('HSET', KEYS[5], 'state', 'creating', 'n', moved, 'bytes', bytes)
  redis.call('RPUSH', KEYS[6], bid)
  for i = 4, 6 do redis.call('EXPIRE', KEYS[i], ARGV[4]) end
end
return moved
