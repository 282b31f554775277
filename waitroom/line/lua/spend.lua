-- spend.lua: trade tickets for passes, each once, and count the students who came.
--
-- KEYS[1]     state hash   (shown: admitted students who came for their pass)
-- KEYS[2..]   one spent marker per ticket (string; its presence means it was traded)
-- ARGV[1]     marker lifetime, seconds (the ticket's own lifetime)
--
-- Returns one number per marker, in order: 1 the first time, 0 for a ticket already
-- traded (a copy kept or shared after its owner got a pass).
--
-- The count of students who came, against the count admitted, is how the
-- governor measures no-shows. It is only added to an existing state, so an
-- emptied Redis is never given a partial one.

local replies = {}
local shown = 0
for i = 2, #KEYS do
  if redis.call('SET', KEYS[i], 1, 'NX', 'EX', ARGV[1]) then
    replies[i - 1] = 1
    shown = shown + 1
  else
    replies[i - 1] = 0
  end
end
if shown > 0 and redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HINCRBY', KEYS[1], 'shown', shown)
end
return replies
