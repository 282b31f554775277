-- spend.lua: trade a ticket for a pass, once, and count the student who came.
--
-- KEYS[1]  spent marker (string; its presence means the ticket was traded)
-- KEYS[2]  state hash   (shown: admitted students who came for their pass)
-- ARGV[1]  marker lifetime, seconds (the ticket's own lifetime)
--
-- Returns 1 the first time, 0 for a ticket already traded.
--
-- The count of students who came, against the count admitted, is how the
-- governor measures no-shows. It is only added to an existing state, so an
-- emptied Redis is never given a partial one.

if not redis.call('SET', KEYS[1], 1, 'NX', 'EX', ARGV[1]) then
  return 0
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('HINCRBY', KEYS[2], 'shown', 1)
end
return 1
