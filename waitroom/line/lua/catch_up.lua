-- catch_up.lua: move a line that went back up to what a gateway saw of it.
--
-- Replication is asynchronous: a replica promoted by Sentinel or Cluster may lack
-- the last writes of the primary that died. Joins and trades were answered only
-- once a replica held them (WAIT), but the pacer's ticks were not: the frontier
-- may be a few ticks behind what the gateways already showed, so students told
-- "your turn" would be sent back to wait. Every gateway worker remembers the line
-- as it last read it and calls this when the line it reads is behind; each call
-- only ever raises, so the highest memory wins whichever worker comes first.
--
-- KEYS[1]  state hash   (seq, frontier, epoch, released_n)
-- ARGV[1]  epoch the caller saw (another epoch is another line: nothing to do)
-- ARGV[2]  seq to reach at least (the last position issued as the caller saw it,
--          plus any places that may have been issued since, when joins are not
--          confirmed by a replica)
-- ARGV[3]  frontier to reach at least
-- ARGV[4]  released_n the caller saw ('' when none): a release's pre-queue size,
--          which fixes its shuffle, is restored rather than recorded anew
--
-- Returns {places skipped, admissions restored}: how far seq and frontier moved;
-- {0, 0} when the line was not behind, has another epoch or no state.

local st = redis.call('HMGET', KEYS[1], 'seq', 'frontier', 'epoch', 'released_n')
if not st[3] or st[3] ~= ARGV[1] then
  return {0, 0}
end
local seq = tonumber(st[1]) or 0
local frontier = tonumber(st[2]) or 0
local want_seq = tonumber(ARGV[2])
local want_frontier = tonumber(ARGV[3])
local skipped, restored = 0, 0
if want_seq > seq then
  skipped = want_seq - seq
  seq = want_seq
  redis.call('HSET', KEYS[1], 'seq', seq)
end
-- Never past the last position issued: the frontier admits places, not numbers.
if want_frontier > seq then want_frontier = seq end
if want_frontier > frontier then
  restored = want_frontier - frontier
  redis.call('HSET', KEYS[1], 'frontier', want_frontier)
end
if ARGV[4] ~= '' and not st[4] then
  redis.call('HSET', KEYS[1], 'released_n', ARGV[4])
end
return {skipped, restored}
