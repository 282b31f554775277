-- login.lua: count an admin login attempt before its password is checked.
--
-- Counting after the check let parallel guesses through: each read a count below
-- the limit, spent 100 ms on scrypt, and only then counted. Here the count and the
-- decision are one atomic step, so at most ARGV[2] checks per address per window
-- run, however many requests arrive at once, on however many gateways.
--
-- KEYS[1]  attempts from one address (string, EX: the window from the first)
-- KEYS[2]  password checks from every address (string, EX: the window)
-- ARGV[1]  window, seconds
-- ARGV[2]  most password checks one address gets per window
--
-- Returns {1, 0, password checks overall before this one} when the password may be
-- checked, or {0, seconds until the address may try again, attempts from the
-- address in the window} when it is locked out.
--
-- The expiry is set only when a counter has none: attempts during a lock-out do
-- not extend it. A refused attempt is not counted overall (it costs no check).

local window = tonumber(ARGV[1])
local attempts = redis.call('INCR', KEYS[1])
if redis.call('TTL', KEYS[1]) < 0 then
  redis.call('EXPIRE', KEYS[1], window)
end
if attempts > tonumber(ARGV[2]) then
  return {0, math.max(1, redis.call('TTL', KEYS[1])), attempts}
end
local overall = redis.call('INCR', KEYS[2])
if redis.call('TTL', KEYS[2]) < 0 then
  redis.call('EXPIRE', KEYS[2], window)
end
return {1, 0, overall - 1}
