-- Claim the right to contact one customer (the frequency cap; see docs/feature-store.md).
--
-- FeatureStore prepends TTL_MS and OFFERS_KEPT.
-- KEYS[1] offers (zset trigger_event_id -> ts), KEYS[2] sent (hash trigger_event_id -> the
-- offer as published). ARGV: trigger_event_id, ts, cap_seconds, offer payload.
-- Returns 1 when the claim is allowed and recorded, the stored payload when this trigger was
-- claimed before (a replay: the caller re-emits exactly that offer), 0 when another claim lies
-- less than cap_seconds away from ts (either side).

local trigger = ARGV[1]
if redis.call('ZSCORE', KEYS[1], trigger) then
  return redis.call('HGET', KEYS[2], trigger) or 1
end
local ts = tonumber(ARGV[2])
local cap = tonumber(ARGV[3])
if cap > 0 then
  local lo = '(' .. string.format('%.17g', ts - cap)
  local hi = '(' .. string.format('%.17g', ts + cap)
  if redis.call('ZCOUNT', KEYS[1], lo, hi) > 0 then return 0 end
end
redis.call('ZADD', KEYS[1], ARGV[2], trigger)
redis.call('HSET', KEYS[2], trigger, ARGV[4])
local n = redis.call('ZCARD', KEYS[1])
if n > OFFERS_KEPT then
  local old = redis.call('ZRANGE', KEYS[1], 0, n - OFFERS_KEPT - 1)
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - OFFERS_KEPT - 1)
  redis.call('HDEL', KEYS[2], unpack(old))
end
redis.call('PEXPIRE', KEYS[1], TTL_MS)
redis.call('PEXPIRE', KEYS[2], TTL_MS)
return 1
