-- Claim the right to contact one customer (the frequency cap; see docs/feature-store.md).
--
-- FeatureStore prepends TTL_MS and OFFERS_KEPT.
-- KEYS[1] offers (zset trigger_event_id -> ts). ARGV: trigger_event_id, ts, cap_seconds.
-- Returns 1 when the claim is allowed and recorded (or was recorded before: a replay),
-- 0 when another claim lies less than cap_seconds away from ts (either side).

local trigger = ARGV[1]
if redis.call('ZSCORE', KEYS[1], trigger) then return 1 end
local ts = tonumber(ARGV[2])
local cap = tonumber(ARGV[3])
if cap > 0 then
  local lo = '(' .. string.format('%.17g', ts - cap)
  local hi = '(' .. string.format('%.17g', ts + cap)
  if redis.call('ZCOUNT', KEYS[1], lo, hi) > 0 then return 0 end
end
redis.call('ZADD', KEYS[1], ARGV[2], trigger)
local n = redis.call('ZCARD', KEYS[1])
if n > OFFERS_KEPT then redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - OFFERS_KEPT - 1) end
redis.call('PEXPIRE', KEYS[1], TTL_MS)
return 1
