-- count.lua: a counter that lives for a fixed window from its first use: lookups
-- made with one admission pass, or places in line one client took.
--
-- KEYS[1]  counter string
-- ARGV[1]  window, ms (the counter's lifetime, set when it is created)
-- ARGV[2]  change: 1 to count a use, -1 to give one back
--
-- Returns {count after the change, ms until the counter expires}; {0, 0} when
-- giving back to a counter that no longer exists (nothing to give back to).
--
-- The expiry is set only when the counter has none, so counting never extends the
-- window, and a give-back never creates a key without a TTL.

local change = tonumber(ARGV[2])
if change < 0 and redis.call('EXISTS', KEYS[1]) == 0 then
  return {0, 0}
end
local count = redis.call('INCRBY', KEYS[1], change)
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  ttl = tonumber(ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return {count, ttl}
