-- ratelimit.lua: the per-user and per-address limits for every api route but the purchase (whose
-- reserve.lua applies the same limits in its own single round trip).
--
-- KEYS: 1 user rate key, 2 address rate key
-- ARGV: 1 user interval ms (0 = off), 2 user burst, 3 addr interval ms (0 = off), 4 addr burst
-- Reply: 0 allowed, else Retry-After in whole seconds

return rate_limit(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), KEYS[2], tonumber(ARGV[3]),
                  tonumber(ARGV[4]), now_ms())
