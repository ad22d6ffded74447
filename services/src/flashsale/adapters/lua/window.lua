-- window.lua: open or close a sale now, by Redis TIME (POST /v1/admin/sales/{id}/open|close).
-- open moves opens_at to now if it is later; close moves closes_at (and a later opens_at) to now.
-- Both are idempotent: a second call finds nothing to move and changes nothing.
--
-- KEYS: 1 sale hash
-- ARGV: 1 'open' | 'close', 2 events channel
-- Reply: 1 changed, 0 unchanged, -1 no such sale

local s = redis.call('HMGET', KEYS[1], 'opens', 'closes', 'deleting')
if not s[1] or s[3] == '1' then
  return -1
end
local now = now_ms()
local opens, closes = tonumber(s[1]), tonumber(s[2])
local changed = 0
if ARGV[1] == 'open' then
  if opens > now and closes > now then
    redis.call('HSET', KEYS[1], 'opens', now)
    changed = 1
  end
else
  if closes > now then
    redis.call('HSET', KEYS[1], 'closes', now)
    if opens > now then
      redis.call('HSET', KEYS[1], 'opens', now)
    end
    changed = 1
  end
end
if changed == 1 then
  local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
  redis.call('PUBLISH', ARGV[2], '{"type":"sale","seq":' .. seq .. '}')
end
return changed
