-- settle.lua: apply one order status transition to the sale's Redis counters, exactly once.
-- Called after PostgreSQL has committed the same transition; a redelivered message calls it again and it
-- changes nothing the second time (the order's last applied status is kept in the order-states hash).
-- A failed order releases its units: stock +qty, the user's holds -qty, and the new stock is published; a
-- waiting room paused by the sell-out resumes admitting.
--
-- KEYS: 1 sale hash, 2 holds hash, 3 order-states hash
-- ARGV: 1 order_id, 2 user_id, 3 qty, 4 new status, 5 sale events channel, 6 order events channel,
--       7 order event JSON
-- Reply: 1 applied, 0 already applied, -1 transition not allowed, -2 sale gone

if redis.call('EXISTS', KEYS[1]) == 0 then
  return -2
end

local fields = {pending = 'pending', confirmed = 'confirmed', failed = 'failed',
                needs_reconciliation = 'nr'}
local allowed = {
  confirmed = {pending = true, needs_reconciliation = true},
  failed = {pending = true, needs_reconciliation = true},
  needs_reconciliation = {pending = true},
}

local order_id, new = ARGV[1], ARGV[4]
local qty = tonumber(ARGV[3])
local old = redis.call('HGET', KEYS[3], order_id) or 'pending'
if old == new then
  return 0
end
if not allowed[new] or not allowed[new][old] then
  return -1
end

redis.call('HINCRBY', KEYS[1], fields[old], -qty)
redis.call('HINCRBY', KEYS[1], fields[new], qty)
redis.call('HSET', KEYS[3], order_id, new)

if new == 'failed' then
  local remaining = redis.call('HINCRBY', KEYS[1], 'remaining', qty)
  if redis.call('HINCRBY', KEYS[2], ARGV[2], -qty) <= 0 then
    redis.call('HDEL', KEYS[2], ARGV[2])
  end
  local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
  redis.call('PUBLISH', ARGV[5], '{"type":"stock","remaining":' .. remaining .. ',"seq":' .. seq .. '}')
  if remaining > 0 then
    wr_resume(KEYS[1], ARGV[5], now_ms())
  end
end
redis.call('PUBLISH', ARGV[6], ARGV[7])
return 1
