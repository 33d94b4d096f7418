-- Keep and count a finished (pair, model) once, however often a redelivered task reports it.
-- KEYS[1] records hash (pair index -> public record JSON), KEYS[2] stats hash
-- ARGV[1] pair index, ARGV[2] outcome letter (o ok, c cached, e error), ARGV[3] model,
-- ARGV[4] input tokens, ARGV[5] output tokens, ARGV[6] expiry seconds, ARGV[7] record,
-- ARGV[8] attempts, ARGV[9] error kind ('' when scored), ARGV[10] cost in nano-dollars,
-- ARGV[11] '1' when usage counts only with the first report (a batch result read again)
local first = redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[7])
if first == 1 then
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
return first
