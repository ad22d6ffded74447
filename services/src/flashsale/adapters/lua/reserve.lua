-- reserve.lua: the whole purchase decision in one atomic step on the sale's slot.
-- Order of checks: rate limits, sale exists, idempotency (replay / reuse), window against Redis TIME,
-- the waiting room's admission pass, queue backlog, per-user limit, stock. Only a successful reservation writes anything besides the
-- rate-limit state: stock -qty, holds +qty, counters, XADD to the order stream, the stored answer,
-- and a PUBLISH of the new stock (subscribers derive sold_out from remaining == 0); the last unit of a sale
-- with a waiting room also pauses its admission schedule.
--
-- KEYS: 1 sale hash, 2 holds hash, 3 idempotency key, 4 user rate key, 5 address rate key, 6 order stream,
--       7 placed-order key (lets GET /v1/orders/{id} answer before the order worker has written the row)
-- ARGV: 1 user_id, 2 qty, 3 fingerprint, 4 order_id, 5 answer body (JSON), 6 idempotency ttl ms,
--       7 user interval ms (0 = no limit), 8 user burst, 9 addr interval ms (0 = no limit), 10 addr burst,
--       11 max backlog, 12 overloaded Retry-After s, 13 sale_id, 14 Idempotency-Key, 15 events channel,
--       16 placed-order ttl ms, 17 '1' if the caller holds a valid admission pass for this sale (checked by
--       the API in memory: signature, user, sale, expiry), else '0'
-- Reply: {code, payload}: 0 reserved {0, body}; 1 replay {1, body}; 3 rate limited {3, retry_after_s};
--        7 not open {7, opens_ms}; 8 overloaded {8, retry_after_s}; others {code} (11: no admission pass).

local now = now_ms()

-- Rate limits first: the contract applies them to every purchase, one for an unknown sale included.
local retry_after = rate_limit(KEYS[4], tonumber(ARGV[7]), tonumber(ARGV[8]), KEYS[5], tonumber(ARGV[9]),
                               tonumber(ARGV[10]), now)
if retry_after > 0 then
  return {3, retry_after}
end

local sale = redis.call('HMGET', KEYS[1], 'initial', 'remaining', 'opens', 'closes', 'limit', 'price',
                        'deleting', 'wr')
if not sale[1] or sale[7] == '1' then
  return {2}
end

-- Idempotency: a finished key returns its stored answer; a different body under the same key is refused.
local stored = redis.call('GET', KEYS[3])
if stored then
  local sep = string.find(stored, '\n', 1, true)
  if string.sub(stored, 1, sep - 1) ~= ARGV[3] then
    return {4}
  end
  return {1, string.sub(stored, sep + 1)}
end

local opens = tonumber(sale[3])
local closes = tonumber(sale[4])
if now >= closes then
  return {6}
end
if now < opens then
  return {7, opens}
end

-- The waiting room: without a pass only "sold out" is worth saying (it sends the crowd home at once).
if sale[8] == '1' and ARGV[17] ~= '1' then
  if tonumber(sale[2]) <= 0 then
    return {10}
  end
  return {11}
end

if redis.call('XLEN', KEYS[6]) >= tonumber(ARGV[11]) then
  return {8, tonumber(ARGV[12])}
end

local qty = tonumber(ARGV[2])
local held = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if held + qty > tonumber(sale[5]) then
  return {9}
end

local remaining = tonumber(sale[2])
if remaining < qty then
  return {10}
end

remaining = redis.call('HINCRBY', KEYS[1], 'remaining', -qty)
redis.call('HINCRBY', KEYS[2], ARGV[1], qty)
redis.call('HINCRBY', KEYS[1], 'pending', qty)
redis.call('HINCRBY', KEYS[1], 'accepted', 1)
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)

redis.call('XADD', KEYS[6], '*', 'o', ARGV[4], 's', ARGV[13], 'u', ARGV[1], 'q', ARGV[2],
           'p', sale[6], 'k', ARGV[14], 't', now)

redis.call('SET', KEYS[7], '{"sale_id":"' .. ARGV[13] .. '","user_id":"' .. ARGV[1] .. '","quantity":'
           .. ARGV[2] .. ',"unit_price":"' .. sale[6] .. '","created_at":' .. now .. '}', 'PX', ARGV[16])

-- Remember the answer at least as long as the sale lives, plus the promised 24 h.
local ttl = math.max(tonumber(ARGV[6]), closes - now + tonumber(ARGV[6]))
redis.call('SET', KEYS[3], ARGV[3] .. '\n' .. ARGV[5], 'PX', ttl)

redis.call('PUBLISH', ARGV[15], '{"type":"stock","remaining":' .. remaining .. ',"seq":' .. seq .. '}')
if remaining == 0 and sale[8] == '1' then
  wr_pause(KEYS[1], ARGV[15], now)
end
return {0, ARGV[5]}
