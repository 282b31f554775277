-- init.lua: create a room's state when it has none: a new room, or a Redis that
-- came back empty. In the second case the caller passes the last seq and frontier
-- it saw, so places already handed out stay valid and nobody is admitted early,
-- and the admin's controls as it last saw them, so a restart undoes no decision.
--
-- KEYS[1]  state hash
-- KEYS[2]  config hash
-- ARGV[1]  seq to start from (last position issued as the caller last saw it)
-- ARGV[2]  frontier to start from
-- ARGV[3]  epoch (identifies this line; tickets of another epoch are not honoured)
-- ARGV[4]  TTL of the state key, seconds
-- ARGV[5]  now, ms (optional: a simulated clock; empty means Redis TIME)
-- ARGV[6]  released_n: size of a released pre-queue ('' when none)
-- ARGV[7..] config field, value pairs, written only if the config hash is empty
--
-- Returns 1 when it created the state, 0 when the state already existed.

if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
local now = tonumber(ARGV[5])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
redis.call('HSET', KEYS[1], 'seq', ARGV[1], 'frontier', ARGV[2], 'credit', '0',
  'last_ms', now, 'epoch', ARGV[3], 'admitted', 0, 'active', 0)
if ARGV[6] and ARGV[6] ~= '' then
  redis.call('HSET', KEYS[1], 'released_n', ARGV[6])
end
redis.call('EXPIRE', KEYS[1], ARGV[4])
if #ARGV >= 8 and redis.call('EXISTS', KEYS[2]) == 0 then
  for i = 7, #ARGV, 2 do
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  end
end
return 1
