-- join.lua: give an arrival the next place in line; admit at once when nobody waits.
--
-- KEYS[1]  state hash   (seq, frontier, credit, epoch, admitted, released_n)
-- KEYS[2]  active zset  (one member per recent admission, score = expiry ms)
-- KEYS[3]  config hash  (paused, max_active, mode, release_at)
-- ARGV[1]  max_active default (used when the config hash has none)
-- ARGV[2]  active window, ms (how long an admission counts against max_active)
-- ARGV[3]  TTL of the state and active keys, seconds
-- ARGV[4]  now, ms (optional: a simulated clock; empty means Redis TIME)
--
-- Returns {position, frontier, admitted (1|0), epoch}, or {0} when the room has no
-- state yet (fresh or an emptied Redis): the caller runs init.lua, then retries.
--
-- Immediate admission spends a credit that only the pacer (advance.lua) mints, so a
-- burst of arrivals into an idle room is paced like everyone else. Before a
-- scheduled release nobody is admitted; the first join or tick at or after it
-- records how many positions the pre-queue holds (released_n), which fixes the
-- block that waitroom/release.py shuffles.

if redis.call('EXISTS', KEYS[1]) == 0 then
  return {0}
end

local now = tonumber(ARGV[4])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local cfg = redis.call('HMGET', KEYS[3], 'max_active', 'paused', 'mode', 'release_at')
local max_active = tonumber(cfg[1]) or tonumber(ARGV[1])
local paused = cfg[2] == '1'
local mode = cfg[3] or 'queue'
local release_at = tonumber(cfg[4])
local before_release = false
if release_at then
  if now < release_at then
    before_release = true
  elseif redis.call('HEXISTS', KEYS[1], 'released_n') == 0 then
    redis.call('HSET', KEYS[1], 'released_n', redis.call('HGET', KEYS[1], 'seq') or 0)
  end
end

local position = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local st = redis.call('HMGET', KEYS[1], 'frontier', 'credit', 'epoch')
local frontier = tonumber(st[1]) or 0
local credit = tonumber(st[2]) or 0

local admitted = 0
if position == frontier + 1 and not paused and not before_release
    and mode ~= 'queue-all' and credit >= 1 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if redis.call('ZCARD', KEYS[2]) < max_active then
    frontier = position
    redis.call('HSET', KEYS[1], 'frontier', frontier, 'credit', tostring(credit - 1))
    redis.call('HINCRBY', KEYS[1], 'admitted', 1)
    redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), position)
    redis.call('EXPIRE', KEYS[2], ARGV[3])
    admitted = 1
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
return {position, frontier, admitted, st[3]}
