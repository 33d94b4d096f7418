-- Replace a task's reservation by what its call really cost.
-- KEYS[1] budget hash; ARGV[1] model, ARGV[2] task id, ARGV[3] real cost (nano-dollars)
-- A task with no open reservation (settled already by an earlier report) changes nothing.
local budget, model, task, cost = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3])
local held = redis.call('HGET', budget, 'res:' .. task)
if not held then return 0 end
held = tonumber(held)
redis.call('HDEL', budget, 'res:' .. task)
redis.call('HINCRBY', budget, 'reserved', -held)
redis.call('HINCRBY', budget, model .. ':reserved', -held)
redis.call('HINCRBY', budget, 'spent', cost)
redis.call('HINCRBY', budget, model .. ':spent', cost)
return 1
