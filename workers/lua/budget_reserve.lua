-- Reserve a call's worst-case cost against a job's caps, atomically across every worker.
-- KEYS[1] budget hash: cap/spent/reserved for the job, <model>:cap/spent/reserved per model,
--         res:<task> the task's open reservation
-- ARGV[1] model, ARGV[2] task id, ARGV[3] amount (nano-dollars)
-- Returns 1 reserved, -1 does not fit now but may once open reservations settle, 0 never
-- fits (what is already spent leaves too little).
local budget, model, task, amount = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3])
local function num(field) return tonumber(redis.call('HGET', budget, field) or '0') end
-- A reservation left by this task's previous delivery (its worker died mid-call) may have
-- been paid: it becomes spent, so the cap still holds whatever that call cost.
local stale = redis.call('HGET', budget, 'res:' .. task)
if stale then
  local old = tonumber(stale)
  redis.call('HINCRBY', budget, 'reserved', -old)
  redis.call('HINCRBY', budget, 'spent', old)
  redis.call('HINCRBY', budget, model .. ':reserved', -old)
  redis.call('HINCRBY', budget, model .. ':spent', old)
  redis.call('HDEL', budget, 'res:' .. task)
end
local verdict = 1
for _, scope in ipairs({'', model .. ':'}) do
  local cap = redis.call('HGET', budget, scope .. 'cap')
  if cap then
    cap = tonumber(cap)
    local spent, reserved = num(scope .. 'spent'), num(scope .. 'reserved')
    if spent + amount > cap then return 0 end
    if spent + reserved + amount > cap then verdict = -1 end
  end
end
if verdict == 1 then
  redis.call('HINCRBY', budget, 'reserved', amount)
  redis.call('HINCRBY', budget, model .. ':reserved', amount)
  redis.call('HSET', budget, 'res:' .. task, amount)
end
return verdict
