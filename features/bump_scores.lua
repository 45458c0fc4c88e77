-- Add decayed increments to one co-occurrence (or popularity) sorted set, trim it, refresh its
-- TTL: one call per key per batch instead of one ZINCRBY per member plus two more commands.
-- KEYS[1] the sorted set. ARGV: bound (members kept), ttl_ms, JSON [member, amount, ...].
local pairs_ = cjson.decode(ARGV[3])
for i = 1, #pairs_, 2 do
  redis.call('ZINCRBY', KEYS[1], pairs_[i + 1], pairs_[i])
end
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -(tonumber(ARGV[1]) + 1))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 0
