-- upsert_sale.lua: create or update a sale's definition atomically (PUT /v1/admin/sales/{id}).
-- The stock of a sale that has accepted orders cannot change, nor can its per-user limit go down (buyers
-- would then hold more than the limit, breaking invariant 2): that is decided here, on the same slot as
-- reserve.lua, so no purchase can slip in between the check and the write.
-- The waiting room may be switched on or off and re-rated at any time: its schedule is rebased at the current
-- admitted count so that nobody admitted stops being admitted and no slot is handed out twice. Its mode cannot
-- change once the pre-queue is drawn (the order is promised from then on).
--
-- KEYS: 1 sale hash, 2 live-sales set
-- ARGV: 1 sale_id, 2 name, 3 price, 4 stock, 5 opens ms, 6 closes ms, 7 per-user limit, 8 events channel,
--       9 waiting room '1' on | '0' off, 10 mode, 11 admits per second, 12 session s, 13 a fresh random seed
--       (kept only if the sale has none yet)
-- Reply: {0, 1} created; {0, 0} updated; {1} stock change refused; {2} sale is being deleted;
--        {3} lowering the per-user limit refused; {4} changing the waiting-room mode after the draw refused

local cur = redis.call('HMGET', KEYS[1], 'initial', 'accepted', 'deleting', 'limit', 'wr', 'wr_mode',
                       'wr_drawn')
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
  if tonumber(cur[1]) ~= stock and sold then
    return {1}
  end
  if ARGV[9] == '1' and cur[7] and cur[6] and cur[6] ~= ARGV[10] then
    return {4}
  end
  if tonumber(cur[1]) ~= stock then
    redis.call('HSET', KEYS[1], 'initial', stock, 'remaining', stock)
  end
else
  created = 1
  redis.call('HSET', KEYS[1], 'initial', stock, 'remaining', stock, 'pending', 0, 'confirmed', 0,
             'failed', 0, 'nr', 0, 'accepted', 0, 'seq', 0)
  redis.call('SADD', KEYS[2], ARGV[1])
end

-- The waiting room, against the schedule as it stood before this change.
local was_on, on = cur[5] == '1', ARGV[9] == '1'
if was_on or on then
  local now = now_ms()
  local admitted, rate = 0, nil
  if cur[5] then -- it had one before (on, or switched off with its count frozen): continue that count
    local opens, base, since, old_rate, paused = wr_schedule(KEYS[1])
    admitted, rate = base, old_rate
    if was_on then
      admitted = math.max(base, wr_admitted(now, opens, base, since, old_rate, paused))
    end
  end
  if on and not was_on then
    -- Switched on: admission starts now (or at the opening), after whoever it admitted before.
    local sold_out = tonumber(redis.call('HGET', KEYS[1], 'remaining')) <= 0 and now >= tonumber(ARGV[5])
    redis.call('HSET', KEYS[1], 'wr_base', admitted, 'wr_since', now, 'wr_paused', sold_out and 1 or 0)
    redis.call('HSETNX', KEYS[1], 'wr_joined', 0)
    redis.call('HSETNX', KEYS[1], 'wr_seed', ARGV[13])
  elseif not on or tonumber(ARGV[11]) ~= rate then
    redis.call('HSET', KEYS[1], 'wr_base', admitted, 'wr_since', now)
  end
  redis.call('HSET', KEYS[1], 'wr', on and 1 or 0)
  if on then
    redis.call('HSET', KEYS[1], 'wr_mode', ARGV[10], 'wr_rate', ARGV[11], 'wr_session', ARGV[12])
  end
  redis.call('HINCRBY', KEYS[1], 'wr_ver', 1)
end

redis.call('HSET', KEYS[1], 'id', ARGV[1], 'name', ARGV[2], 'price', ARGV[3], 'opens', ARGV[5],
           'closes', ARGV[6], 'limit', ARGV[7])
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('PUBLISH', ARGV[8], '{"type":"sale","seq":' .. seq .. '}')
return {0, created}
