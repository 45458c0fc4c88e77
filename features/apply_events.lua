-- Apply customers' events to their rolling features, or read them (docs/feature-store.md).
--
-- FeatureStore prepends the constants (TTL_MS, HORIZON_S, DEDUP_MAX, GAP_S, HALF_LIFE_S,
-- MAX_CATS, TOP_K, NEVER, WIN_W, WIN_N) rendered from FeatureSettings, so this file is not
-- runnable on its own.
--
-- KEYS: 4 per customer: state (msgpack, below), seen (zset event_id -> ts), offers (zset
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
--   duplicate (0 new, 1 seen before, 2 seen before with another digest: a conflict),
--   last_offer_ts (-1 when none), the 29 features in FEATURE_NAMES order, n_top, then TOP_K
--   shares (0-padded); names is a cjson array of the top category names of all rows, n_top
--   per row.
--
-- State fields: t latest event ts; lc/lp last click/purchase ts; on/os order count/sum;
-- cv/ci cart value/items; cc ts of the purchase that last emptied the cart; sid/sl/s1/s2/s3
-- session id, its last ts, clicks/carts/checkouts; fn feedback count; rs/rn rating sum/count;
-- ss/sn sentiment sum/count; ca category -> decayed score; nc categories kept; b[1..4] bucket
-- maps of the 4 windows (bucket*4 + metric -> value); ns ids in seen; tr last horizon trim;
-- dc dedup floor (newest ts dropped by the size cap); bt the token of the last batch that
-- applied events of this customer, ba the ids it applied.
--
-- The state key holds (layout 2) one MessagePack array (false for a field that is unset): 2,
-- t, lc, lp, on, os, cv, ci, cc, sid, sl, s1, s2, s3, fn, rs, rn, ss, sn, nc, ns, tr, dc, bt, ba
-- (a MessagePack array of the ids, itself packed as a string: decoded only on a retry), b[1..4],
-- and the categories as one array name1, score1, ... in the order of the last feature row
-- (best first). Layout 1, one map of the fields above with ba a map id -> true, is read too (a
-- deployment upgrades in place) and rewritten as layout 2 by the next applied event.
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
local mp_pack = cmsgpack.pack
local mp_unpack = cmsgpack.unpack

local LAYOUT = 2
local ROW_W = 32 + TOP_K
-- Members per ZADD/HSET/HDEL/ZMSCORE call (Lua's unpack has a stack limit).
local SPLIT = 500

local function fmt(x)
  return string.format('%.17g', x)
end

local function new_state()
  return {on = 0, os = 0, cv = 0, ci = 0, cc = 0, s1 = 0, s2 = 0, s3 = 0, fn = 0, rs = 0,
          rn = 0, ss = 0, sn = 0, nc = 0, ns = 0, ca = {}, ord = {}, b = {{}, {}, {}, {}}}
end

-- The categories best first: score descending, then name ascending (a strict total order,
-- so any sort gives this one order).
local function by_score(ca)
  return function(a, b)
    local sa, sb = ca[a], ca[b]
    if sa ~= sb then return sa > sb end
    return a < b
  end
end

-- Read a state blob (layout 2 or 1) into the table the script works on; nil when none.
-- In memory ord lists the category names (best first as of the last row) and ba is the
-- packed id array (or nil).
local function load(raw)
  if not raw then return nil end
  local V = mp_unpack(raw)
  local layout = V[1]
  if layout == nil then  -- layout 1: the map itself
    local ord, n = {}, 0
    for cat in pairs(V.ca) do n = n + 1; ord[n] = cat end
    table.sort(ord, by_score(V.ca))
    V.ord = ord
    if V.ba then
      local ids, k = {}, 0
      for id in pairs(V.ba) do k = k + 1; ids[k] = id end
      V.ba = mp_pack(ids)
    end
    return V
  end
  if layout ~= LAYOUT then error('state layout ' .. tostring(layout) .. ' is not known') end
  local cats = V[30]
  local ca, ord = {}, {}
  for j = 1, #cats, 2 do
    local cat = cats[j]
    ca[cat] = cats[j + 1]
    ord[(j + 1) / 2] = cat
  end
  return {t = V[2] or nil, lc = V[3] or nil, lp = V[4] or nil, on = V[5], os = V[6],
          cv = V[7], ci = V[8], cc = V[9], sid = V[10] or nil, sl = V[11] or nil, s1 = V[12],
          s2 = V[13], s3 = V[14], fn = V[15], rs = V[16], rn = V[17], ss = V[18], sn = V[19],
          nc = V[20], ns = V[21], tr = V[22] or nil, dc = V[23] or nil, bt = V[24] or nil,
          ba = V[25] or nil, b = {V[26], V[27], V[28], V[29]}, ca = ca, ord = ord}
end

-- The blob of S (layout 2). One table is packed, not 30 arguments: cmsgpack makes a string of
-- each argument and concatenates them.
local ARR = {}
local function save(S)
  local ca, ord, cats = S.ca, S.ord, {}
  for j = 1, #ord do
    local cat = ord[j]
    cats[2 * j - 1] = cat
    cats[2 * j] = ca[cat]
  end
  local b, a = S.b, ARR
  a[1], a[2], a[3], a[4] = LAYOUT, S.t or false, S.lc or false, S.lp or false
  a[5], a[6], a[7], a[8], a[9] = S.on, S.os, S.cv, S.ci, S.cc
  a[10], a[11], a[12], a[13], a[14] = S.sid or false, S.sl or false, S.s1, S.s2, S.s3
  a[15], a[16], a[17], a[18], a[19], a[20], a[21] = S.fn, S.rs, S.rn, S.ss, S.sn, S.nc, S.ns
  a[22], a[23], a[24], a[25] = S.tr or false, S.dc or false, S.bt or false, S.ba or false
  a[26], a[27], a[28], a[29], a[30] = b[1], b[2], b[3], b[4], cats
  return mp_pack(a)
end

-- Window sums of the customer in hand: WS[m * 4 + k] is metric m of window k summed for the
-- reference bucket WHI[k] (nil: not summed yet). Events added to a summed window add to its
-- sums; a reference time in another bucket sums the window again.
local WS = {}
local WHI = {}
local WREF = nil  -- the reference time WS was last brought to

-- Move the reference time forward to ts, decaying every category score on the way.
local function advance(S, ts)
  if S.t then
    local f = 2 ^ (-(ts - S.t) / HALF_LIFE_S)
    local ca, ord = S.ca, S.ord
    for j = 1, #ord do
      local cat = ord[j]
      ca[cat] = ca[cat] * f
    end
  end
  S.t = ts
end

-- Bucket b of window k holds metric m (0 clicks, 1 carts, 2 purchases, 3 spend) at b*4+m.
-- Add v1 to metric m1, and v2 to metric m2 unless it is nil, in the buckets of ts.
local function add_windows(S, ts, m1, v1, m2, v2)
  local ref = S.t
  local b = S.b
  for k = 1, 4 do
    local w = WIN_W[k]
    local idx = floor(ts / w)
    local hi = idx
    if ts ~= ref then hi = floor(ref / w) end
    if idx > hi - WIN_N[k] then
      local bk = b[k]
      local key = idx * 4 + m1
      bk[key] = (bk[key] or 0) + v1
      if m2 then
        key = idx * 4 + m2
        bk[key] = (bk[key] or 0) + v2
      end
      if WHI[k] == hi then
        key = m1 * 4 + k
        WS[key] = WS[key] + v1
        if m2 then
          key = m2 * 4 + k
          WS[key] = WS[key] + v2
        end
      end
    end
  end
end

local function add_affinity(S, cat, w, ts)
  if w <= 0 then return end
  local ca = S.ca
  local v = w
  if ts ~= S.t then v = w * 2 ^ (-(S.t - ts) / HALF_LIFE_S) end
  local cur = ca[cat]
  if cur then
    ca[cat] = cur + v
    return
  end
  ca[cat] = v
  local ord = S.ord
  ord[#ord + 1] = cat
  S.nc = S.nc + 1
  if S.nc > MAX_CATS then
    local wc, ws = nil, nil
    for c, s in pairs(ca) do
      if ws == nil or s < ws or (s == ws and c > wc) then wc, ws = c, s end
    end
    ca[wc] = nil
    for j = 1, #ord do
      if ord[j] == wc then table.remove(ord, j); break end
    end
    S.nc = S.nc - 1
  end
end

-- Apply the event whose record starts at ARGV[i] (event_id), with ts and ncat parsed.
local function apply(S, i, ts, ncat)
  if S.t == nil or ts > S.t then advance(S, ts) end
  local kind = ARGV[i + 1]
  if kind == 'c' then
    local action = ARGV[i + 4]
    local cart = action == 'add_to_cart'
    if cart then add_windows(S, ts, 0, 1, 1, 1) else add_windows(S, ts, 0, 1) end
    if not S.lc or ts > S.lc then S.lc = ts end
    if ts >= S.cc then
      if cart then
        S.cv = S.cv + (tonumber(ARGV[i + 5]) or 0); S.ci = S.ci + 1
      elseif action == 'remove_from_cart' then
        local cv = S.cv - (tonumber(ARGV[i + 5]) or 0)
        if cv < 0 then cv = 0 end
        S.cv = cv
        if S.ci > 0 then S.ci = S.ci - 1 end
      end
    end
    local sid = ARGV[i + 3]
    local cur = S.sid
    if cur == nil or (sid ~= cur and ts >= S.sl) or (sid == cur and ts - S.sl > GAP_S) then
      S.sid = sid; S.sl = ts; S.s1 = 0; S.s2 = 0; S.s3 = 0
    end
    if sid == S.sid then
      S.s1 = S.s1 + 1
      if cart then S.s2 = S.s2 + 1 elseif action == 'checkout_start' then S.s3 = S.s3 + 1 end
      if ts > S.sl then S.sl = ts end
    end
  elseif kind == 'p' then
    local value = tonumber(ARGV[i + 5])
    add_windows(S, ts, 2, 1, 3, value)
    if not S.lp or ts > S.lp then S.lp = ts end
    S.on = S.on + 1; S.os = S.os + value
    if ts >= S.cc then S.cc = ts; S.cv = 0; S.ci = 0 end
  else
    local value, sent = tonumber(ARGV[i + 5]), tonumber(ARGV[i + 6])
    S.fn = S.fn + 1
    if value then S.rs = S.rs + value; S.rn = S.rn + 1 end
    if sent then S.ss = S.ss + sent; S.sn = S.sn + 1 end
  end
  for j = i + 9, i + 8 + 2 * ncat, 2 do
    add_affinity(S, ARGV[j], tonumber(ARGV[j + 1]), ts)
  end
end

-- Sum the windows at reference time ref into WS where its bucket is not the one summed
-- (buckets that fell out of every window are dropped from S on the way).
local function sum_windows(S, ref)
  for k = 1, 4 do
    local w = WIN_W[k]
    local hi = floor(ref / w)
    if WHI[k] ~= hi then
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
      WHI[k] = hi
      WS[k] = c0; WS[4 + k] = c1; WS[8 + k] = c2; WS[12 + k] = c3
    end
  end
  WREF = ref
end

-- Put the categories back in order (insertion sort: they rarely move between rows).
local function sort_categories(ca, ord)
  for j = 2, #ord do
    local x = ord[j]
    local sx = ca[x]
    local i = j - 1
    while i > 0 do
      local y = ord[i]
      local sy = ca[y]
      if sx > sy or (sx == sy and x < y) then
        ord[i + 1] = y
        i = i - 1
      else
        break
      end
    end
    ord[i + 1] = x
  end
end

-- The rows of this call (one string of ROW_W doubles each) and the top category names.
local rows, nrows = {}, 0
local names, nn = {}, 0
local SHARES = {}
local ROW_FMT = '<' .. string.rep('d', ROW_W)

-- Append the feature row at reporting time ts with windows ending at ref.
local function emit(S, ts, ref, main, dup, offer)
  if ref ~= WREF then sum_windows(S, ref) end
  local since_c, since_p = NEVER, NEVER
  local t = S.lc
  if t then since_c = ts - t; if since_c < 0 then since_c = 0 end end
  t = S.lp
  if t then since_p = ts - t; if since_p < 0 then since_p = 0 end end
  local s1, s2, s3 = 0, 0, 0
  if S.sid and ts - S.sl <= GAP_S then s1, s2, s3 = S.s1, S.s2, S.s3 end
  local on, rn, sn = S.on, S.rn, S.sn
  local ca, ord = S.ca, S.ord
  local n = #ord
  if n > 1 then sort_categories(ca, ord) end
  local total = 0
  for j = 1, n do total = total + ca[ord[j]] end
  local aff = 0
  if main and total > 0 and ca[main] then aff = ca[main] / total end
  if n > TOP_K then n = TOP_K end
  local shares = SHARES
  for j = 1, n do
    local cat = ord[j]
    nn = nn + 1
    names[nn] = cat
    shares[j] = ca[cat] / total
  end
  for j = n + 1, TOP_K do shares[j] = 0 end
  local w = WS
  nrows = nrows + 1
  rows[nrows] = pack(ROW_FMT, dup, offer,
    w[1], w[2], w[3], w[4], w[5], w[6], w[7], w[8],
    w[9], w[10], w[11], w[12], w[13], w[14], w[15], w[16],
    since_c, since_p, on > 0 and S.os / on or 0, S.cv, S.ci, s1, s2, s3, S.fn,
    rn > 0 and S.rs / rn or 0, sn > 0 and S.ss / sn or 0, aff, S.nc, n,
    unpack(shares, 1, TOP_K))
end

local function last_offer_ts(key)
  local top = call('ZREVRANGE', key, 0, 0, 'WITHSCORES')
  return tonumber(top[2]) or -1
end

-- call(cmd, key, list[from..to]) in slices of at most SPLIT members.
local function call_split(cmd, key, list, from, to, step)
  local out = nil
  for j = from, to, SPLIT * step do
    local r = call(cmd, key, unpack(list, j, math.min(j + SPLIT * step - 1, to)))
    if type(r) == 'table' then
      if out == nil then out = r else for q = 1, #r do out[#out + 1] = r[q] end end
    end
  end
  return out
end

-- Forget the digests of ids that leave seen.
local function forget_sums(ksums, ids)
  call_split('HDEL', ksums, ids, 1, #ids, 1)
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
  local S = load(call('GET', KEYS[1]))
  if not S then return false end
  local now = tonumber(ARGV[2])
  local ref = now
  if S.t and S.t > ref then ref = S.t end
  emit(S, now, ref, nil, 0, last_offer_ts(KEYS[3]))
  return {rows[1], cjson.encode(names)}
end

local token = ARGV[2]
local NONE = {}  -- ours when this batch applied nothing of the customer before
-- Per customer, reused: the event ids and ncats, the (ts, id) and (id, digest) pairs the call
-- adds to seen and sums, and KNOWN: id -> digest of the ids added (emptied after each customer:
-- two customers may use one id).
local IDS, NCAT, ADDS, SUMS, KNOWN = {}, {}, {}, {}, {}
local i = 3
for c = 1, #KEYS, 4 do
  local kstate, kseen, koffers, ksums = KEYS[c], KEYS[c + 1], KEYS[c + 2], KEYS[c + 3]
  local S = load(call('GET', kstate)) or new_state()
  local offer = last_offer_ts(koffers)
  local changed = false
  local ours = NONE
  if token ~= '' and S.bt == token and S.ba then
    ours = {}
    for _, id in pairs(mp_unpack(S.ba)) do ours[id] = true end
  end
  local applied, na = {}, 0
  WHI[1], WHI[2], WHI[3], WHI[4], WREF = nil, nil, nil, nil, nil
  -- Which ids seen holds already: one ZMSCORE for all the customer's events.
  local n = tonumber(ARGV[i])
  local at = i + 1
  for e = 1, n do
    local ncat = tonumber(ARGV[at + 8])
    IDS[e] = ARGV[at]
    NCAT[e] = ncat
    at = at + 9 + 2 * ncat
  end
  local scores = call_split('ZMSCORE', kseen, IDS, 1, n, 1)
  local nadd = 0
  for e = 1, n do
    i = i + 1
    local id, ts, ncat = ARGV[i], tonumber(ARGV[i + 2]), NCAT[e]
    local dup = 0
    if ours[id] then  -- applied by this batch's earlier attempt: new to the caller, once
      ours[id] = nil
      na = na + 1; applied[na] = id
    elseif (S.t ~= nil and ts < S.t - HORIZON_S) or (S.dc ~= nil and ts <= S.dc) then
      dup = 1  -- too old to tell from a replay
    else
      local was = KNOWN[id]
      if was or scores[e] then
        was = was or call('HGET', ksums, id)  -- none for ids seen before digests were kept
        dup = (was and was ~= ARGV[i + 7]) and 2 or 1
      else
        local digest = ARGV[i + 7]
        KNOWN[id] = digest
        nadd = nadd + 2
        ADDS[nadd - 1] = ARGV[i + 2]; ADDS[nadd] = id
        SUMS[nadd - 1] = id; SUMS[nadd] = digest
        S.ns = S.ns + 1
        apply(S, i, ts, ncat)
        na = na + 1; applied[na] = id
        changed = true
      end
    end
    emit(S, ts, S.t or ts, ncat > 0 and ARGV[i + 9] or nil, dup, offer)
    i = i + 8 + 2 * ncat
  end
  i = i + 1
  if changed then
    call_split('ZADD', kseen, ADDS, 1, nadd, 2)
    call_split('HSET', ksums, SUMS, 1, nadd, 2)
    for j = 1, nadd, 2 do KNOWN[SUMS[j]] = nil end
    if token ~= '' then
      if S.bt == token then
        for id in pairs(ours) do na = na + 1; applied[na] = id end
      end
      S.bt, S.ba = token, mp_pack(applied)
    end
    trim_seen(S, kseen, ksums)
    call('SET', kstate, save(S), 'PX', TTL_MS)
    call('PEXPIRE', kseen, TTL_MS)
    call('PEXPIRE', ksums, TTL_MS)
    if offer >= 0 then call('PEXPIRE', koffers, TTL_MS) end
  end
end
return {table.concat(rows), cjson.encode(names)}
