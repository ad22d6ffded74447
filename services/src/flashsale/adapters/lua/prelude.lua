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
