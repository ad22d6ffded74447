-- purge_sale.lua: free the keys of a deleted sale once none of its orders is unsettled.
-- KEYS: 1 sale hash, 2 live-sales set, 3 holds hash, 4 order-states hash, 5 waiting-room tickets hash
-- ARGV: 1 sale_id
-- Reply: 1 purged, 0 still has unsettled orders, -1 not a deleted sale

if redis.call('HGET', KEYS[1], 'deleting') ~= '1' then
  if redis.call('EXISTS', KEYS[1]) == 0 then
    redis.call('SREM', KEYS[2], ARGV[1])
  end
  return -1
end
return purge_if_settled(ARGV[1])
