-- prelude.lua: helpers shared by every flashsale script; the loader puts this text in front of each one.

-- Milliseconds by the Redis server's clock, so every API process and the operator agree on "now".
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Generic cell rate algorithm: one key per subject holds its theoretical arrival time (ms).
-- Returns (wait_ms, new_tat): wait_ms > 0 means refused; otherwise store new_tat with store_tat().
local function gcra_wait(key, interval, burst, now)
  if interval <= 0 then return 0, 0 end
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then tat = now end
  local tolerance = interval * (burst - 1)
  if tat - now > tolerance then
    return tat - now - tolerance, tat
  end
  return 0, tat + interval
end

local function store_tat(key, interval, tat, now)
  if interval > 0 then
    redis.call('SET', key, tat, 'PX', math.ceil(tat - now) + 1000)
  end
end

-- Checks a user limit and an address limit together; charges both only if both allow.
-- Returns 0 when allowed, else the Retry-After in whole seconds.
local function rate_limit(user_key, user_interval, user_burst, addr_key, addr_interval, addr_burst, now)
  local wait_u, tat_u = gcra_wait(user_key, user_interval, user_burst, now)
  local wait_a, tat_a = gcra_wait(addr_key, addr_interval, addr_burst, now)
  local wait = math.max(wait_u, wait_a)
  if wait > 0 then
    return math.ceil(wait / 1000)
  end
  store_tat(user_key, user_interval, tat_u, now)
  store_tat(addr_key, addr_interval, tat_a, now)
  return 0
end

-- Waiting room (domain/waiting_room.py is the reference; a test checks both agree). The sale hash holds
-- the schedule: wr_base tickets were admitted at wr_since (ms), wr_rate more per second since, unless
-- wr_paused. Before opens_at nobody is admitted.
local function wr_admitted(now, opens, base, since, rate, paused)
  if now < opens then
    return 0
  end
  if paused then
    return base
  end
  -- Exact in doubles: (now - start) * rate stays below 2^53 for any sale length and rate we allow.
  return base + math.max(0, math.floor((now - math.max(since, opens)) * rate / 1000))
end

-- Reads the schedule fields of a sale hash: {opens, base, since, rate, paused}.
local function wr_schedule(sale_key)
  local s = redis.call('HMGET', sale_key, 'opens', 'wr_base', 'wr_since', 'wr_rate', 'wr_paused')
  local opens = tonumber(s[1])
  return opens, tonumber(s[2] or '0'), tonumber(s[3] or s[1]), tonumber(s[4] or '1'), s[5] == '1'
end

-- A new schedule version for the SSE processes, which compute positions from it locally.
local function wr_publish(sale_key, channel)
  local ver = redis.call('HINCRBY', sale_key, 'wr_ver', 1)
  local s = redis.call('HMGET', sale_key, 'wr_base', 'wr_since', 'wr_paused', 'wr_rate')
  redis.call('PUBLISH', channel, '{"type":"queue","ver":' .. ver .. ',"base":' .. (s[1] or 0) ..
             ',"since":' .. (s[2] or 0) .. ',"paused":' .. (s[3] or 0) .. ',"rate":' .. (s[4] or 1) .. '}')
end

-- Sold out: freeze admission where it stands (at most at the tickets handed out: slots nobody held are
-- not banked for later). Called by the reservation of the last unit.
local function wr_pause(sale_key, channel, now)
  local opens, base, since, rate, paused = wr_schedule(sale_key)
  if paused then
    return
  end
  local joined = tonumber(redis.call('HGET', sale_key, 'wr_joined') or '0')
  local admitted = math.max(base, math.min(joined, wr_admitted(now, opens, base, since, rate, false)))
  redis.call('HSET', sale_key, 'wr_base', admitted, 'wr_since', now, 'wr_paused', 1)
  wr_publish(sale_key, channel)
end

-- A unit came back to a paused sale: admission goes on from where it stopped.
local function wr_resume(sale_key, channel, now)
  if redis.call('HGET', sale_key, 'wr_paused') ~= '1' then
    return
  end
  redis.call('HSET', sale_key, 'wr_since', now, 'wr_paused', 0)
  wr_publish(sale_key, channel)
end

-- The keyed permutation of [0, size): a 4-round Feistel network over the next power of four (at least
-- 4^4: smaller domains are measurably not uniform), cycle-walking back into [0, size).
local WR_ROUNDS = 4
local WR_MIN_HALF_BITS = 4

local function wr_feistel(x, half, seed)
  local l, r = math.floor(x / half), x % half
  for round = 0, WR_ROUNDS - 1 do
    local f = tonumber(string.sub(redis.sha1hex(seed .. ':' .. round .. ':' .. r), 1, 8), 16) % half
    l, r = r, bit.bxor(l, f)
  end
  return l * half + r
end

local function wr_permute(x, size, seed)
  if size <= 1 then
    return x
  end
  local k = WR_MIN_HALF_BITS
  while 4 ^ k < size do
    k = k + 1
  end
  local half = 2 ^ k
  local y = wr_feistel(x, half, seed)
  while y >= size do
    y = wr_feistel(y, half, seed)
  end
  return y
end

-- The admission rank of join number seq (1-based); -1 while a random pre-queue is not drawn yet.
local function wr_rank(seq, mode, drawn, seed)
  if mode == 'random' then
    if not drawn then
      return -1
    end
    if seq <= drawn then
      return wr_permute(seq - 1, drawn, seed)
    end
  end
  return seq - 1
end

-- A deleted sale's keys: free them unless one of its orders is still unsettled (pending, or in
-- reconciliation). KEYS as in delete_sale.lua and purge_sale.lua: 1 sale hash, 2 live-sales set,
-- 3 holds hash, 4 order-states hash, 5 waiting-room tickets hash. Returns 1 when freed, else 0.
local function purge_if_settled(sale_id)
  local open = tonumber(redis.call('HGET', KEYS[1], 'pending') or '0')
             + tonumber(redis.call('HGET', KEYS[1], 'nr') or '0')
  if open > 0 then
    return 0
  end
  redis.call('DEL', KEYS[1], KEYS[3], KEYS[4], KEYS[5])
  redis.call('SREM', KEYS[2], sale_id)
  return 1
end
