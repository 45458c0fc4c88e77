-- Apply customers' events to their rolling features, or read them (docs/feature-store.md).
--
-- FeatureStore prepends the constants (TTL_MS, HORIZON_S, DEDUP_MAX, GAP_S, HALF_LIFE_S,
-- MAX_CATS, TOP_K, NEVER, WIN_W, WIN_N) rendered from FeatureSettings, so this file is not
-- runnable on its own.
--
-- KEYS: 4 per customer: state (msgpack blob), seen (zset event_id -> ts), offers (zset
-- trigger_event_id -> ts), sums (hash event_id -> content digest of the event applied under
-- that id). In a cluster all keys of one call share one slot.
-- ARGV (decoded by the header from one JSON array of strings):
-- ARGV[1] = 'a' (apply), ARGV[2] = the batch token ('' for none), then per customer (in KEYS
--   order): the number of its events, then one record per event: event_id, kind (c|p|f), ts,
--   session_id, action, value, sentiment, digest (of the content but ts), ncat, then
--   ncat x (category, affinity weight); the first category is the event's own.
--   value: click price, purchase total or feedback rating; '' when absent.
-- ARGV[1] = 'g' (get), ARGV[2] = now: one customer, read-only; nil when it is unknown.
-- Returns {rows, names}: rows is one string of little-endian doubles, ROW_W per event:
--   duplicate (0 new, 1 seen before, 2 seen before with another digest: a conflict), last_offer_ts (-1 when none), the 29 features in FEATURE_NAMES order,
--   n_top, then TOP_K shares (0-padded); names is a cjson array of the top category names of
--   all rows, n_top per row.
--
-- State fields: t latest event ts; lc/lp last click/purchase ts; on/os order count/sum;
-- cv/ci cart value/items; cc ts of the purchase that last emptied the cart; sid/sl/s1/s2/s3
-- session id, its last ts, clicks/carts/checkouts; fn feedback count; rs/rn rating sum/count;
-- ss/sn sentiment sum/count; ca category -> decayed score; nc categories kept; b[1..4] bucket
-- maps of the 4 windows (bucket*4 + metric -> value); ns ids in seen; tr last horizon trim;
-- dc dedup floor (newest ts dropped by the size cap); bt the token of the last batch that
-- applied events of this customer, ba the ids it applied (id -> true).
--
-- A retry is not a replay: when the same batch token comes back (our own retry after a lost
-- reply), the ids that token already applied are reported as new (duplicate 0) without being
-- applied again, so the caller learns from them once. Their feature rows are the state after
-- the whole first attempt of that customer's events. Any other token, or none, sees a
-- replay as a duplicate.

local floor = math.floor
local tonumber = tonumber
local pairs = pairs
local call = redis.call
local pack = struct.pack
local unpack = unpack

local ROW_W = 32 + TOP_K
local ROW_FMT = '<' .. string.rep('d', ROW_W)

local function fmt(x)
  return string.format('%.17g', x)
end

local function new_state()
  return {on = 0, os = 0, cv = 0, ci = 0, cc = 0, s1 = 0, s2 = 0, s3 = 0, fn = 0, rs = 0,
          rn = 0, ss = 0, sn = 0, nc = 0, ns = 0, ca = {}, b = {{}, {}, {}, {}}}
end

-- Move the reference time forward to ts, decaying every category score on the way.
local function advance(S, ts)
  if S.t then
    local f = 2 ^ (-(ts - S.t) / HALF_LIFE_S)
    local ca = S.ca
    for cat, sc in pairs(ca) do ca[cat] = sc * f end
  end
  S.t = ts
end

-- Bucket b of window k holds metric m (0 clicks, 1 carts, 2 purchases, 3 spend) at b*4+m.
local function add_windows(S, ts, m, v)
  local ref = S.t
  for k = 1, 4 do
    local w = WIN_W[k]
    local idx = floor(ts / w)
    if idx > floor(ref / w) - WIN_N[k] then
      local bk = S.b[k]
      local key = idx * 4 + m
      bk[key] = (bk[key] or 0) + v
    end
  end
end

local function add_affinity(S, cat, w, ts)
  if w <= 0 then return end
  local ca = S.ca
  local v = w * 2 ^ (-(S.t - ts) / HALF_LIFE_S)
  local cur = ca[cat]
  if cur then
    ca[cat] = cur + v
    return
  end
  ca[cat] = v
  S.nc = S.nc + 1
  if S.nc > MAX_CATS then
    local wc, ws = nil, nil
    for c, s in pairs(ca) do
      if ws == nil or s < ws or (s == ws and c > wc) then wc, ws = c, s end
    end
    ca[wc] = nil
    S.nc = S.nc - 1
  end
end

local function apply(S, kind, ts, sid, action, value, sent, i, ncat)
  if S.t == nil or ts > S.t then advance(S, ts) end
  if kind == 'c' then
    local cart = action == 'add_to_cart'
    add_windows(S, ts, 0, 1)
    if cart then add_windows(S, ts, 1, 1) end
    if not S.lc or ts > S.lc then S.lc = ts end
    if ts >= S.cc then
      if cart then
        S.cv = S.cv + (value or 0); S.ci = S.ci + 1
      elseif action == 'remove_from_cart' then
        local cv = S.cv - (value or 0)
        if cv < 0 then cv = 0 end
        S.cv = cv
        if S.ci > 0 then S.ci = S.ci - 1 end
      end
    end
    if S.sid == nil or (sid ~= S.sid and ts >= S.sl) or (sid == S.sid and ts - S.sl > GAP_S) then
      S.sid = sid; S.sl = ts; S.s1 = 0; S.s2 = 0; S.s3 = 0
    end
    if sid == S.sid then
      S.s1 = S.s1 + 1
      if cart then S.s2 = S.s2 + 1 elseif action == 'checkout_start' then S.s3 = S.s3 + 1 end
      if ts > S.sl then S.sl = ts end
    end
  elseif kind == 'p' then
    add_windows(S, ts, 2, 1)
    add_windows(S, ts, 3, value)
    if not S.lp or ts > S.lp then S.lp = ts end
    S.on = S.on + 1; S.os = S.os + value
    if ts >= S.cc then S.cc = ts; S.cv = 0; S.ci = 0 end
  else
    S.fn = S.fn + 1
    if value then S.rs = S.rs + value; S.rn = S.rn + 1 end
    if sent then S.ss = S.ss + sent; S.sn = S.sn + 1 end
  end
  for j = i, i + 2 * ncat - 1, 2 do
    add_affinity(S, ARGV[j], tonumber(ARGV[j + 1]), ts)
  end
end

-- Scratch tables reused for every row (allocations are what costs in a script).
local ROW = {}
local TOP = {}
local CA = nil
local function by_score(a, b)
  local sa, sb = CA[a], CA[b]
  if sa ~= sb then return sa > sb end
  return a < b
end

local rows, names = {}, {}

-- Append the feature row at reporting time ts with windows ending at ref (buckets that fell
-- out of every window are dropped from S on the way).
local function emit(S, ts, ref, main, dup, offer)
  local row = ROW
  row[1] = dup
  row[2] = offer
  for k = 1, 4 do
    local w = WIN_W[k]
    local hi = floor(ref / w)
    local lo = hi - WIN_N[k]
    local bk = S.b[k]
    local c0, c1, c2, c3 = 0, 0, 0, 0
    for key, v in pairs(bk) do
      local idx = floor(key / 4)
      if idx > lo then
        if idx <= hi then
          local m = key - idx * 4
          if m == 0 then c0 = c0 + v elseif m == 1 then c1 = c1 + v
          elseif m == 2 then c2 = c2 + v else c3 = c3 + v end
        end
      else
        bk[key] = nil
      end
    end
    row[2 + k] = c0; row[6 + k] = c1; row[10 + k] = c2; row[14 + k] = c3
  end
  local since = NEVER
  if S.lc then since = ts - S.lc; if since < 0 then since = 0 end end
  row[19] = since
  since = NEVER
  if S.lp then since = ts - S.lp; if since < 0 then since = 0 end end
  row[20] = since
  row[21] = S.on > 0 and S.os / S.on or 0
  row[22] = S.cv
  row[23] = S.ci
  if S.sid and ts - S.sl <= GAP_S then
    row[24] = S.s1; row[25] = S.s2; row[26] = S.s3
  else
    row[24] = 0; row[25] = 0; row[26] = 0
  end
  row[27] = S.fn
  row[28] = S.rn > 0 and S.rs / S.rn or 0
  row[29] = S.sn > 0 and S.ss / S.sn or 0
  local ca = S.ca
  local total, n = 0, 0
  for cat, sc in pairs(ca) do
    total = total + sc; n = n + 1; TOP[n] = cat
  end
  for j = n + 1, #TOP do TOP[j] = nil end
  row[30] = (main and total > 0 and ca[main]) and ca[main] / total or 0
  row[31] = S.nc
  if n > 1 then
    CA = ca
    table.sort(TOP, by_score)
  end
  if n > TOP_K then n = TOP_K end
  row[32] = n
  local nn = #names
  for j = 1, n do
    nn = nn + 1
    names[nn] = TOP[j]
    row[32 + j] = ca[TOP[j]] / total
  end
  for j = n + 1, TOP_K do row[32 + j] = 0 end
  rows[#rows + 1] = pack(ROW_FMT, unpack(row, 1, ROW_W))
end

local function last_offer_ts(key)
  local top = call('ZREVRANGE', key, 0, 0, 'WITHSCORES')
  return tonumber(top[2]) or -1
end

-- Forget the digests of ids that leave seen.
local function forget_sums(ksums, ids)
  for j = 1, #ids, 1000 do
    call('HDEL', ksums, unpack(ids, j, math.min(j + 999, #ids)))
  end
end

-- Forget seen ids behind the dedup horizon (lazily: at most ~16 times per horizon) and beyond
-- the size cap (raising the dedup floor S.dc to the newest id dropped), with their digests.
local function trim_seen(S, key, ksums)
  local cut = S.t - HORIZON_S
  if cut - (S.tr or 0) > HORIZON_S / 16 then
    local old = call('ZRANGEBYSCORE', key, '-inf', '(' .. fmt(cut))
    if #old > 0 then
      forget_sums(ksums, old)
      S.ns = S.ns - call('ZREMRANGEBYSCORE', key, '-inf', '(' .. fmt(cut))
    end
    S.tr = cut
  end
  if S.ns > DEDUP_MAX then
    local last = S.ns - DEDUP_MAX - 1
    local edge = tonumber(call('ZRANGE', key, last, last, 'WITHSCORES')[2])
    if S.dc == nil or edge > S.dc then S.dc = edge end
    forget_sums(ksums, call('ZRANGE', key, 0, last))
    call('ZREMRANGEBYRANK', key, 0, last)
    S.ns = call('ZCARD', key)
  end
end

if ARGV[1] == 'g' then
  local raw = call('GET', KEYS[1])
  if not raw then return false end
  local S = cmsgpack.unpack(raw)
  local now = tonumber(ARGV[2])
  local ref = now
  if S.t and S.t > ref then ref = S.t end
  emit(S, now, ref, nil, 0, last_offer_ts(KEYS[3]))
  return {rows[1], cjson.encode(names)}
end

local token = ARGV[2]
local i = 3
for c = 1, #KEYS, 4 do
  local kstate, kseen, koffers, ksums = KEYS[c], KEYS[c + 1], KEYS[c + 2], KEYS[c + 3]
  local raw = call('GET', kstate)
  local S = raw and cmsgpack.unpack(raw) or new_state()
  local offer = last_offer_ts(koffers)
  local changed = false
  local ours = (token ~= '' and S.bt == token) and S.ba or {}
  local applied = {}
  for _ = 1, tonumber(ARGV[i]) do
    i = i + 1
    local id, ts, digest = ARGV[i], tonumber(ARGV[i + 2]), ARGV[i + 7]
    local ncat = tonumber(ARGV[i + 8])
    local dup = 0
    if ours[id] then  -- applied by this batch's earlier attempt: new to the caller, once
      ours[id] = nil
      applied[id] = true
    elseif (S.t ~= nil and ts < S.t - HORIZON_S) or (S.dc ~= nil and ts <= S.dc) then
      dup = 1  -- too old to tell from a replay
    elseif call('ZADD', kseen, 'NX', ARGV[i + 2], id) == 0 then
      local was = call('HGET', ksums, id)  -- none for ids seen before digests were kept
      dup = (was and was ~= digest) and 2 or 1
    else
      S.ns = S.ns + 1
      call('HSET', ksums, id, digest)
      apply(S, ARGV[i + 1], ts, ARGV[i + 3], ARGV[i + 4], tonumber(ARGV[i + 5]),
            tonumber(ARGV[i + 6]), i + 9, ncat)
      applied[id] = true
      changed = true
    end
    emit(S, ts, S.t or ts, ncat > 0 and ARGV[i + 9] or nil, dup, offer)
    i = i + 8 + 2 * ncat
  end
  i = i + 1
  if changed then
    if token ~= '' then
      if S.bt == token then
        for id in pairs(ours) do applied[id] = true end
      end
      S.bt, S.ba = token, applied
    end
    trim_seen(S, kseen, ksums)
    call('SET', kstate, cmsgpack.pack(S), 'PX', TTL_MS)
    call('PEXPIRE', kseen, TTL_MS)
    call('PEXPIRE', ksums, TTL_MS)
    if offer >= 0 then call('PEXPIRE', koffers, TTL_MS) end
  end
end
return {table.concat(rows), cjson.encode(names)}
