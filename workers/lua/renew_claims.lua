-- Extend each claim this process still holds; leave alone any that lapsed or passed to
-- another task (a renewal must never revive or steal a claim).
-- KEYS claim keys; ARGV[1] lease in milliseconds, ARGV[i + 1] the owner of KEYS[i].
-- Returns, per key, 1 if extended, 0 if no longer that owner's.
local held = {}
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[i + 1] then
    redis.call('PEXPIRE', key, ARGV[1])
    held[i] = 1
  else
    held[i] = 0
  end
end
return held
