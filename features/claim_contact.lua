-- Claim the right to contact customers (the frequency cap; see docs/feature-store.md), for
-- several claims in one call, decided in order (claims of one customer see each other).
--
-- FeatureStore prepends TTL_MS and OFFERS_KEPT, and decodes ARGV from one JSON array.
-- Per claim n: KEYS[2n-1] offers (zset trigger_event_id -> ts), KEYS[2n] sent (hash
-- trigger_event_id -> the offer as published). ARGV[1] cap_seconds, then per claim
-- ARGV[3n-1..3n+1]: trigger_event_id, ts, offer payload.
-- Returns per claim: 1 when allowed and recorded, the stored payload when this trigger was
-- claimed before (a replay: the caller re-emits exactly that offer), 0 when another claim lies
-- less than cap_seconds away from ts (either side).

local cap = tonumber(ARGV[1])

local function claim(offers, sent, trigger, ts_arg, payload)
  if redis.call('ZSCORE', offers, trigger) then
    return redis.call('HGET', sent, trigger) or 1
  end
  local ts = tonumber(ts_arg)
  if cap > 0 then
    local lo = '(' .. string.format('%.17g', ts - cap)
    local hi = '(' .. string.format('%.17g', ts + cap)
    if redis.call('ZCOUNT', offers, lo, hi) > 0 then return 0 end
  end
  redis.call('ZADD', offers, ts_arg, trigger)
  redis.call('HSET', sent, trigger, payload)
  local n = redis.call('ZCARD', offers)
  if n > OFFERS_KEPT then
    local old = redis.call('ZRANGE', offers, 0, n - OFFERS_KEPT - 1)
    redis.call('ZREMRANGEBYRANK', offers, 0, n - OFFERS_KEPT - 1)
    redis.call('HDEL', sent, unpack(old))
  end
  redis.call('PEXPIRE', offers, TTL_MS)
  redis.call('PEXPIRE', sent, TTL_MS)
  return 1
end

local out = {}
for n = 1, #KEYS / 2 do
  local a = 3 * n - 1
  out[n] = claim(KEYS[2 * n - 1], KEYS[2 * n], ARGV[a], ARGV[a + 1], ARGV[a + 2])
end
return out
