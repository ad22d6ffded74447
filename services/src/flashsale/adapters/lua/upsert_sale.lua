-- upsert_sale.lua: create or update a sale's definition atomically (PUT /v1/admin/sales/{id}).
-- The stock of a sale that has accepted orders cannot change, nor can its per-user limit go down (buyers
-- would then hold more than the limit, breaking invariant 2): that is decided here, on the same slot as
-- reserve.lua, so no purchase can slip in between the check and the write.
--
-- KEYS: 1 sale hash, 2 live-sales set
-- ARGV: 1 sale_id, 2 name, 3 price, 4 stock, 5 opens ms, 6 closes ms, 7 per-user limit, 8 events channel
-- Reply: {0, 1} created; {0, 0} updated; {1} stock change refused; {2} sale is being deleted;
--        {3} lowering the per-user limit refused

local cur = redis.call('HMGET', KEYS[1], 'initial', 'accepted', 'deleting', 'limit')
local stock = tonumber(ARGV[4])
local created = 0
if cur[1] then
  if cur[3] == '1' then
    return {2}
  end
  local sold = tonumber(cur[2] or '0') > 0
  if sold and tonumber(ARGV[7]) < tonumber(cur[4] or ARGV[7]) then
    return {3}
  end
  if tonumber(cur[1]) ~= stock then
    if sold then
      return {1}
    end
    redis.call('HSET', KEYS[1], 'initial', stock, 'remaining', stock)
  end
else
  created = 1
  redis.call('HSET', KEYS[1], 'initial', stock, 'remaining', stock, 'pending', 0, 'confirmed', 0,
             'failed', 0, 'nr', 0, 'accepted', 0, 'seq', 0)
  redis.call('SADD', KEYS[2], ARGV[1])
end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'name', ARGV[2], 'price', ARGV[3], 'opens', ARGV[5],
           'closes', ARGV[6], 'limit', ARGV[7])
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('PUBLISH', ARGV[8], '{"type":"sale","seq":' .. seq .. '}')
return {0, created}
