-- delete_sale.lua: DELETE /v1/admin/sales/{id}. Closes the sale and marks it deleted at once (every read
-- and purchase answers 404 from now on), then frees its keys if no order of it is still unsettled;
-- otherwise purge_sale.lua frees them later, when the last order settles.
--
-- KEYS: 1 sale hash, 2 live-sales set, 3 holds hash, 4 order-states hash, 5 waiting-room tickets hash
-- ARGV: 1 sale_id, 2 events channel
-- Reply: -1 no such sale (or already deleted); 0 marked, purge pending; 1 marked and purged

local s = redis.call('HMGET', KEYS[1], 'deleting', 'closes')
if not s[2] or s[1] == '1' then
  return -1
end
local now = now_ms()
if tonumber(s[2]) > now then
  redis.call('HSET', KEYS[1], 'closes', now)
end
redis.call('HSET', KEYS[1], 'deleting', '1')
redis.call('PUBLISH', ARGV[2], '{"type":"deleted"}')
return purge_if_settled(ARGV[1])
