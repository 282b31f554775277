-- govern.lua: record the governor's decision on the room's admission rate.
--
-- KEYS[1]  state hash   (effective_rate, noshow_factor, governor_reason, governor_at,
--                        governor_kind, search)
-- KEYS[2]  metrics hash (rate_change:<kind>, one counter per kind of change)
-- ARGV[1]  effective rate, people per second ('' = follow the admin's rate)
-- ARGV[2]  no-show factor (>= 1; '' = none)
-- ARGV[3]  why, in words, for the admin page
-- ARGV[4]  when, unix seconds
-- ARGV[5]  the auto rate's search, JSON ('' = leave it as it is)
-- ARGV[6]  kind of change, one of a fixed set of names ('' = count nothing)
-- ARGV[7]  TTL of the metrics hash, seconds
--
-- Returns 1, or 0 when the room has no state (never creates a partial one).

if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
if ARGV[1] == '' then
  redis.call('HDEL', KEYS[1], 'effective_rate')
else
  redis.call('HSET', KEYS[1], 'effective_rate', ARGV[1])
end
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], 'noshow_factor')
else
  redis.call('HSET', KEYS[1], 'noshow_factor', ARGV[2])
end
redis.call('HSET', KEYS[1], 'governor_reason', ARGV[3], 'governor_at', ARGV[4])
if ARGV[5] ~= '' then
  redis.call('HSET', KEYS[1], 'search', ARGV[5])
end
if ARGV[6] ~= '' then
  redis.call('HSET', KEYS[1], 'governor_kind', ARGV[6])
  redis.call('HINCRBY', KEYS[2], 'rate_change:' .. ARGV[6], 1)
  redis.call('EXPIRE', KEYS[2], ARGV[7])
end
return 1
