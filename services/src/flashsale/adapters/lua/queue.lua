-- queue.lua: one sale's waiting room. Joins (POST /v1/sales/{id}/queue), a ticket's status (the SSE stream's
-- connect, an admission the SSE process saw coming) and the schedule (the SSE process's cache, the admin view).
-- No admitter process exists: who is admitted is a pure function of the state in this slot and Redis TIME, so
-- any process may ask any number of times, after any restart, and nobody is admitted twice.
--
-- KEYS: 1 sale hash, 2 tickets hash (user -> "seq:join_ms:admitted_ms"), 3 user rate key, 4 address rate key
-- ARGV: 1 op 'join' | 'status' | 'schedule', 2 user_id, 3 events channel,
--       4 user interval ms (0 = no limit), 5 user burst, 6 addr interval ms (0 = no limit), 7 addr burst
-- Reply, join/status: {0, seq, join_ms, rank (-1: not drawn yet), admitted, admitted_ms (0: not yet),
--                      first (1: admitted_ms was set now), joined, now, rate, session_s, opens, remaining,
--                      new (1: this call made the ticket)}
--        schedule:    {0, now, opens, closes, remaining, mode, rate, session_s, base, since, paused, joined,
--                      drawn (-1: not yet), seed, ver}
--        refusals:    {2} no such sale, {3, retry_after_s} rate limited, {6} closed, {10} sold out (join only),
--                     {12} no waiting room, {13} no live ticket (status only)

local now = now_ms()
local op = ARGV[1]

local retry_after = rate_limit(KEYS[3], tonumber(ARGV[4]), tonumber(ARGV[5]), KEYS[4], tonumber(ARGV[6]),
                               tonumber(ARGV[7]), now)
if retry_after > 0 then
  return {3, retry_after}
end

local f = redis.call('HMGET', KEYS[1], 'initial', 'remaining', 'opens', 'closes', 'deleting', 'wr', 'wr_mode',
                     'wr_rate', 'wr_session', 'wr_seed', 'wr_joined', 'wr_drawn', 'wr_base', 'wr_since',
                     'wr_paused', 'wr_ver')
if not f[1] or f[5] == '1' then
  return {2}
end
if f[6] ~= '1' then
  return {12}
end
local remaining, opens, closes = tonumber(f[2]), tonumber(f[3]), tonumber(f[4])
if now >= closes and op ~= 'schedule' then
  return {6}
end
if op == 'join' and remaining <= 0 and now >= opens then
  return {10}
end

local mode, rate, session, seed = f[7], tonumber(f[8]), tonumber(f[9]), f[10]
local joined = tonumber(f[11] or '0')
local drawn = f[12] and tonumber(f[12]) or nil
local base, since, paused = tonumber(f[13] or '0'), tonumber(f[14] or f[3]), f[15] == '1'

-- The draw: the first operation after the opening freezes the pre-queue (its size) for good. Every join
-- passes here first, so nobody who joined after the opening can be part of it.
if not drawn and now >= opens then
  drawn = joined
  redis.call('HSET', KEYS[1], 'wr_drawn', drawn)
end
local admitted = wr_admitted(now, opens, base, since, rate, paused)

if op == 'schedule' then
  return {0, now, opens, closes, remaining, mode, rate, session, base, since, paused and 1 or 0, joined,
          drawn or -1, seed, tonumber(f[16] or '0')}
end

local seq, join_ms, admitted_ms
local new = 0
local ticket = redis.call('HGET', KEYS[2], ARGV[2])
if ticket then
  local a, b, c = string.match(ticket, '^(%d+):(%d+):(%d+)$')
  seq, join_ms, admitted_ms = tonumber(a), tonumber(b), tonumber(c)
  if admitted_ms > 0 and now >= admitted_ms + session * 1000 then
    seq = nil -- the pass expired: the ticket is spent; joining again goes to the back
  end
end
if not seq then
  if op ~= 'join' then
    return {13}
  end
  -- An idle schedule must not bank its unused slots: a crowd arriving a minute after a quiet opening would
  -- otherwise all be admitted at once. When slots beyond this joiner's (rank `joined`) have passed unused,
  -- restart the schedule at this joiner: admitted now, the next one a 1/rate later. Every existing rank is
  -- below the new base, so nobody admitted stops being admitted.
  if now >= opens and not paused and admitted > joined + 1 then
    base, since = joined + 1, now
    redis.call('HSET', KEYS[1], 'wr_base', base, 'wr_since', since)
    wr_publish(KEYS[1], ARGV[3])
    admitted = wr_admitted(now, opens, base, since, rate, paused)
  end
  joined = redis.call('HINCRBY', KEYS[1], 'wr_joined', 1)
  seq, join_ms, admitted_ms, new = joined, now, 0, 1
  redis.call('HSET', KEYS[2], ARGV[2], seq .. ':' .. now .. ':0')
end

local rank = wr_rank(seq, mode, drawn, seed)
local first = 0
if rank >= 0 and rank < admitted and admitted_ms == 0 then
  admitted_ms, first = now, 1
  redis.call('HSET', KEYS[2], ARGV[2], seq .. ':' .. join_ms .. ':' .. now)
end
return {0, seq, join_ms, rank, admitted, admitted_ms, first, joined, now, rate, session, opens, remaining, new}
