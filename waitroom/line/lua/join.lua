-- join.lua: give a block of arrivals consecutive places in line, in the order given;
-- admit at once from the front of the block when nobody waits.
--
-- KEYS[1]  state hash   (seq, frontier, credit, epoch, admitted, released_n)
-- KEYS[2]  active zset  (one member per recent admission, score = expiry ms)
-- KEYS[3]  config hash  (paused, max_active, mode, release_at)
-- KEYS[4..] two counters per arrival when ARGV[6] > 0, none otherwise:
--          KEYS[2 + 2i]  places arrival i's client took in the current window
--          KEYS[3 + 2i]  places arrival i's client holds in the release's pre-queue
-- ARGV[1]  max_active default (used when the config hash has none)
-- ARGV[2]  active window, ms (how long an admission counts against max_active)
-- ARGV[3]  TTL of the state and active keys, seconds
-- ARGV[4]  now, ms (optional: a simulated clock; empty means Redis TIME)
-- ARGV[5]  arrivals in this block, n
-- ARGV[6]  places one client may take per window (0: no limit, and no counter keys)
-- ARGV[7]  that window, ms
-- ARGV[8]  places one client may hold in a release's pre-queue (0: only ARGV[6])
--
-- Returns {frontier, epoch, r1 .. rn}: ri > 0 is arrival i's position (admitted when
-- ri <= frontier); ri <= 0 refuses arrival i by a per-client limit, for -ri ms more.
-- Returns {0} when the room has no state yet (fresh or an emptied Redis): the caller
-- runs init.lua, then retries.
--
-- Positions are handed out in ARGV order, so a block keeps its arrival order and the
-- line stays gap-free. Immediate admission spends credits that only the pacer
-- (advance.lua) mints, so a burst into an idle room is paced like everyone else, and
-- it admits a prefix of the block, so admission stays in order of place. Before a
-- scheduled release nobody is admitted; the first join or tick at or after it records
-- how many positions the pre-queue holds (released_n), which fixes the block that
-- waitroom/line/release.py shuffles. The pre-queue counter lives until the release: the
-- shuffle would otherwise reward whoever holds the most places in it.

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

local n = tonumber(ARGV[5])
local limit = tonumber(ARGV[6])
local window = tonumber(ARGV[7])
local prequeue_limit = tonumber(ARGV[8])

-- A counter that lives ``ttl`` ms from its first use; returns {count, ms left}.
local function count(key, ttl)
  local used = redis.call('INCR', key)
  local left = redis.call('PTTL', key)
  if left < 0 then
    left = ttl
    redis.call('PEXPIRE', key, left)
  end
  return used, left
end

local results = {}
local placed = 0
for i = 1, n do
  local refused = 0
  if limit > 0 then
    local used, left = count(KEYS[2 + 2 * i], window)
    if used > limit then
      refused = left
    elseif before_release and prequeue_limit > 0 then
      local held, until_release = count(KEYS[3 + 2 * i], release_at - now + window)
      if held > prequeue_limit then
        refused = until_release
      end
    end
  end
  if refused > 0 then
    results[i] = -math.max(refused, 1)
  else
    placed = placed + 1
    results[i] = placed
  end
end

local first = 1
if placed > 0 then
  first = redis.call('HINCRBY', KEYS[1], 'seq', placed) - placed + 1
end
local st = redis.call('HMGET', KEYS[1], 'frontier', 'credit', 'epoch')
local frontier = tonumber(st[1]) or 0
local credit = tonumber(st[2]) or 0

if placed > 0 and first == frontier + 1 and not paused and not before_release
    and mode ~= 'queue-all' and credit >= 1 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  local room = max_active - redis.call('ZCARD', KEYS[2])
  local admit = math.min(placed, math.floor(credit), room)
  if admit > 0 then
    frontier = frontier + admit
    redis.call('HSET', KEYS[1], 'frontier', frontier, 'credit', tostring(credit - admit))
    redis.call('HINCRBY', KEYS[1], 'admitted', admit)
    local expiry = now + tonumber(ARGV[2])
    for position = first, frontier do
      redis.call('ZADD', KEYS[2], expiry, position)
    end
    redis.call('EXPIRE', KEYS[2], ARGV[3])
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[3])

local reply = {frontier, st[3]}
for i = 1, n do
  local r = results[i]
  if r > 0 then
    r = first + r - 1
  end
  reply[i + 2] = r
end
return reply
