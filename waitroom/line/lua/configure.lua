-- configure.lua: apply an admin's change to the room's controls and record it in
-- the audit log, in one step (no change goes unrecorded, no record without change).
--
-- KEYS[1]  config hash  (rate, max_active, pass_ttl_s, paused, mode, banner_en,
--                        banner_hi, protected_paths, release_at, release_seed,
--                        release_base)
-- KEYS[2]  audit list   (newest first, JSON entries)
-- KEYS[3]  state hash   (seq, frontier, released_n)
-- ARGV[1]  JSON object merged into every audit entry (at, session, address); its
--          member "defaults", if any, is not merged: it maps a field to the value in
--          force while the field is absent (the gateway's setting), so the audit
--          records the value an admin actually replaced, not an empty string
-- ARGV[2]  audit log length kept
-- ARGV[3]  seed for a new scheduled release (used only if this change starts one)
-- ARGV[4..] field, value pairs; an empty value removes the field (the default)
--
-- Returns {1, number of fields that changed}, or {0, reason, frontier, released_n}
-- when the change would break a release whose pre-queue is still being admitted.
--
-- release_at is special: setting it before any release starts a pre-queue (base =
-- the last position issued, a fresh seed); moving it before the release keeps the
-- pre-queue and its seed; once released, the pre-queue must be fully admitted
-- before a new release is scheduled or the old one cleared, because the places of
-- its unadmitted students depend on it.

local meta = cjson.decode(ARGV[1])
local defaults = meta.defaults or {}
meta.defaults = nil
local changes = {}

local function effective(field, raw)
  if raw == '' then return defaults[field] or '' end
  return raw
end

local function set(field, value)
  local raw = redis.call('HGET', KEYS[1], field) or ''
  if raw == value then return end
  if value == '' then
    redis.call('HDEL', KEYS[1], field)
  else
    redis.call('HSET', KEYS[1], field, value)
  end
  local old, new = effective(field, raw), effective(field, value)
  -- Writing down the default explicitly changes nothing in force: no entry.
  if old ~= new then changes[#changes + 1] = {field, old, new} end
end

for i = 4, #ARGV, 2 do
  local field, value = ARGV[i], ARGV[i + 1]
  if field == 'release_at' then
    local current = redis.call('HGET', KEYS[1], 'release_at') or ''
    if value ~= current then
      local st = redis.call('HMGET', KEYS[3], 'seq', 'frontier', 'released_n')
      local seq = tonumber(st[1]) or 0
      local frontier = tonumber(st[2]) or 0
      local released_n = tonumber(st[3])
      if released_n and frontier < released_n then
        return {0, 'prequeue_busy', frontier, released_n}
      end
      if released_n then
        redis.call('HDEL', KEYS[3], 'released_n')
        current = ''
      end
      if value == '' then
        set('release_seed', '')
        set('release_base', '')
      elseif current == '' then
        set('release_seed', ARGV[3])
        set('release_base', tostring(seq))
      end
      set('release_at', value)
    end
  else
    set(field, value)
  end
end

for _, change in ipairs(changes) do
  local entry = {field = change[1], old = change[2], new = change[3]}
  for k, v in pairs(meta) do entry[k] = v end
  redis.call('LPUSH', KEYS[2], cjson.encode(entry))
end
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[2]) - 1)
return {1, #changes}
