-- advance.lua: one pacer tick. Holds or takes the room's pacer lease, mints
-- admission credit at the configured rate and moves the frontier over waiting
-- positions, never past the last position issued nor beyond max_active.
--
-- KEYS[1]  state hash   (seq, frontier, credit, last_ms, epoch, admitted, active,
--                        effective_rate, noshow_factor)
-- KEYS[2]  active zset  (one member per recent admission, score = expiry ms)
-- KEYS[3]  config hash  (rate, max_active, paused, mode, release_at, rate_auto)
-- KEYS[4]  lease string (id of the worker that paces this room)
-- ARGV[1]  this worker's id
-- ARGV[2]  lease length, ms
-- ARGV[3]  rate default, people per second (when the config hash has none)
-- ARGV[4]  max_active default
-- ARGV[5]  active window, ms
-- ARGV[6]  TTL of the state and active keys, seconds
-- ARGV[7]  now, ms (optional: a simulated clock; empty means Redis TIME)
-- ARGV[8]  rate_auto default, '1' or '0' (when the config hash has none)
-- ARGV[9]  auto rate's start, people per second (until the governor's first decision)
--
-- Returns {1, frontier, seq, advanced, active} for the lease holder,
-- {0} when another worker holds the lease, {-1} when the room has no state.
--
-- Time comes from Redis (TIME), not from the caller, so gateway clocks that
-- disagree cannot speed up or slow down admission. Before a scheduled release
-- nothing moves; the first tick at or after it records the pre-queue's size
-- (released_n), as join.lua does.

local holder = redis.call('GET', KEYS[4])
if holder and holder ~= ARGV[1] then
  return {0}
end
redis.call('SET', KEYS[4], ARGV[1], 'PX', ARGV[2])
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {-1}
end

local now = tonumber(ARGV[7])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local st = redis.call('HMGET', KEYS[1], 'seq', 'frontier', 'credit', 'last_ms',
  'effective_rate', 'noshow_factor')
local seq = tonumber(st[1]) or 0
local frontier = tonumber(st[2]) or 0
local credit = tonumber(st[3]) or 0
-- A new holder (after a takeover) starts from the stored tick, so no admissions
-- are lost or doubled; a long gap is capped below by the burst limit.
local last_ms = tonumber(st[4]) or now
local cfg = redis.call('HMGET', KEYS[3], 'rate', 'max_active', 'paused', 'mode', 'release_at',
  'rate_auto')
-- The admin's rate is a ceiling: the governor (waitroom/room/governor.py) may hold the
-- rate below it while the backend struggles, and admit a little faster to make
-- up for admitted students who never come (at most twice the rate). With the auto
-- rate the governor searches below it for the backend's capacity, starting low;
-- the search measures what the backend receives, no-shows included, so no factor.
local rate = tonumber(cfg[1]) or tonumber(ARGV[3])
local auto = (cfg[6] or ARGV[8]) == '1'
local effective = tonumber(st[5])
if auto and not effective then effective = tonumber(ARGV[9]) end
if effective and effective < rate then rate = effective end
local noshow = tonumber(st[6])
if noshow and noshow > 1 and not auto then rate = rate * math.min(noshow, 2) end
local max_active = tonumber(cfg[2]) or tonumber(ARGV[4])
local mode = cfg[4] or 'queue'
local release_at = tonumber(cfg[5])
-- Held: paused, everyone asked to wait, or the results not out yet.
local held = cfg[3] == '1' or mode == 'queue-all'
if release_at then
  if now < release_at then
    held = true
  elseif redis.call('HEXISTS', KEYS[1], 'released_n') == 0 then
    redis.call('HSET', KEYS[1], 'released_n', seq)
  end
end

-- One second of credit at most, capped before it is spent: an idle room, or a
-- pacer back after a gap (a takeover, a Redis outage), admits a small burst at
-- once, never a flood.
local burst = math.max(1, rate)
local elapsed = math.max(0, now - last_ms)
credit = math.min(credit + rate * elapsed / 1000, burst)

redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local active = redis.call('ZCARD', KEYS[2])

local advanced = 0
if not held then
  advanced = math.min(math.floor(credit), seq - frontier, max_active - active)
  if advanced < 0 then advanced = 0 end
end
if advanced > 0 then
  local expiry = now + tonumber(ARGV[5])
  local members = {}
  for position = frontier + 1, frontier + advanced do
    members[#members + 1] = expiry
    members[#members + 1] = position
    if #members >= 1000 then
      redis.call('ZADD', KEYS[2], unpack(members))
      members = {}
    end
  end
  if #members > 0 then
    redis.call('ZADD', KEYS[2], unpack(members))
  end
  frontier = frontier + advanced
  credit = credit - advanced
  active = active + advanced
  redis.call('HINCRBY', KEYS[1], 'admitted', advanced)
  redis.call('EXPIRE', KEYS[2], ARGV[6])
end
if held then credit = 0 end

redis.call('HSET', KEYS[1], 'frontier', frontier, 'credit', tostring(credit),
  'last_ms', now, 'active', active)
redis.call('EXPIRE', KEYS[1], ARGV[6])
return {1, frontier, seq, advanced, active}
