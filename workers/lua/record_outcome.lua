-- Keep and count a finished (pair, model) once, however often a redelivered task reports it.
-- KEYS[1] records hash (pair index -> public record JSON), KEYS[2] stats hash
-- ARGV[1] pair index, ARGV[2] outcome letter (o ok, c cached, e error), ARGV[3] model,
-- ARGV[4] input tokens, ARGV[5] output tokens, ARGV[6] expiry seconds, ARGV[7] record,
-- ARGV[8] attempts, ARGV[9] error kind ('' when scored), ARGV[10] cost in nano-dollars,
-- ARGV[11] '1' when usage counts only with the first report (a batch result read again)
-- KEYS[3] the job's meta hash (its 'total'): the job closes from these counters, not a chord.
-- KEYS[4] the job's feed-pending flag (workers/feeding.py)
-- Returns 1 for a first report, plus 2 when every item of the job has reported: whoever
-- sees that (a redelivered last task too) sends the idempotent collect.
-- A row a streamed output has already written (and dropped from Redis) is never reported
-- again: a late redelivery must not put its record back or count it twice.
local written = tonumber(redis.call('HGET', KEYS[3], 'written') or '0')
local first = 0
if tonumber(ARGV[1]) >= written then first = redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[7]) end
local done
if first == 1 then
  done = redis.call('HINCRBY', KEYS[2], 'all:done', 1)
  redis.call('HINCRBY', KEYS[2], ARGV[3] .. ':done', 1)
  redis.call('HINCRBY', KEYS[2], ARGV[3] .. ':attempts', ARGV[8])
  if ARGV[2] == 'e' then
    redis.call('HINCRBY', KEYS[2], ARGV[3] .. ':errors', 1)
    redis.call('HINCRBY', KEYS[2], ARGV[3] .. ':error:' .. ARGV[9], 1)
  end
  if ARGV[2] == 'c' then redis.call('HINCRBY', KEYS[2], ARGV[3] .. ':cached', 1) end
end
-- Usage is counted on every report of a call: a repeated call is really paid for. A batch
-- result read twice (after a crash) was paid once.
if first == 1 or ARGV[11] ~= '1' then
  if tonumber(ARGV[4]) > 0 then redis.call('HINCRBY', KEYS[2], ARGV[3] .. ':in', ARGV[4]) end
  if tonumber(ARGV[5]) > 0 then redis.call('HINCRBY', KEYS[2], ARGV[3] .. ':out', ARGV[5]) end
  if tonumber(ARGV[10]) > 0 then redis.call('HINCRBY', KEYS[2], ARGV[3] .. ':cost', ARGV[10]) end
end
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('EXPIRE', KEYS[2], ARGV[6])
if not done then done = tonumber(redis.call('HGET', KEYS[2], 'all:done') or '0') end
local total = tonumber(redis.call('HGET', KEYS[3], 'total') or '-1')
if total >= 0 and done >= total then return first + 2 end
-- A --no-wait job feeds itself (workers/feeding.py): once a quarter of its window is free,
-- the first task to see it (KEYS[4], set NX) asks for a top-up: returns + 4.
if redis.call('HGET', KEYS[3], 'feed') == 'cluster' and
    redis.call('HEXISTS', KEYS[3], 'feed_end') == 0 then
  local fed = tonumber(redis.call('HGET', KEYS[3], 'fed') or '0')
  local cursor = tonumber(redis.call('HGET', KEYS[3], 'cursor') or '0')
  local rows = tonumber(redis.call('HGET', KEYS[3], 'pairs') or '0')
  local window = tonumber(redis.call('HGET', KEYS[3], 'window') or '0')
  -- The slowest model sets the room, as in the feeder (workers/feeding.py, Feeder.room).
  local slowest = nil
  for _, model in ipairs(cjson.decode(redis.call('HGET', KEYS[3], 'models') or '[]')) do
    local d = tonumber(redis.call('HGET', KEYS[2], model .. ':done') or '0')
    if slowest == nil or d < slowest then slowest = d end
  end
  if cursor < rows and (fed - (slowest or 0)) <= 0.75 * window then
    if redis.call('SET', KEYS[4], '1', 'NX', 'EX', 30) then return first + 4 end
  end
end
return first
