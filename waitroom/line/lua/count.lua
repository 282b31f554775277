-- count.lua: counters that live for a fixed window from their first use: the
-- lookups made with admission passes.
--
-- KEYS[1..n]  one counter string per use
-- ARGV[1]     window, ms (a counter's lifetime, set when it is created)
-- ARGV[2..]   one change per key: 1 to count a use, -1 to give one back
--
-- Returns {count after the change, ms until the counter expires} for each key in
-- turn, flat: {c1, ttl1, c2, ttl2, ...}; {0, 0} for a give-back to a counter that
-- no longer exists (nothing to give back to).
--
-- The expiry is set only when the counter has none, so counting never extends the
-- window, and a give-back never creates a key without a TTL.

local replies = {}
for i = 1, #KEYS do
  local change = tonumber(ARGV[i + 1])
  if change < 0 and redis.call('EXISTS', KEYS[i]) == 0 then
    replies[2 * i - 1] = 0
    replies[2 * i] = 0
  else
    local count = redis.call('INCRBY', KEYS[i], change)
    local ttl = redis.call('PTTL', KEYS[i])
    if ttl < 0 then
      ttl = tonumber(ARGV[1])
      redis.call('PEXPIRE', KEYS[i], ttl)
    end
    replies[2 * i - 1] = count
    replies[2 * i] = ttl
  end
end
return replies
