"""Churn state in Redis, owned by the input partition of its customer.

``ChurnWatch`` (``models/alerts/churn.py``) is the rule and its in-memory reference: a
Poisson activity score against the customer's own baseline on every click or purchase, a
silence score from the partition's event time, and hysteresis (one alert on entering "at
risk", none again until the activity score falls to ``churn_exit``). ``ChurnStore`` runs the
same rule in Redis scripts, so a crash, a restart or a rebalance keeps every customer's
baseline, hysteresis and silence deadline, and the partition's next owner raises what its
first owner would have.

Keys, under the hash tag ``{churn-<n>}`` of input partition ``n``:

* ``{p}:{churn-n}:state``: hash, customer id -> JSON: ``a`` at risk (0/1), ``b`` baseline
  clicks per day, ``l`` latest event time, ``i`` its event id, ``s`` spend over 30 days,
  ``g`` the last alert raised (score, time, reason, trigger), ``k`` 1 while a silence alert
  is taken but not forgotten.
* ``{p}:{churn-n}:due``: zset, customer id -> when silence would reach ``churn_enter``.
* ``{p}:{churn-n}:seen``: zset, customer id -> latest event time (the least recently active
  go beyond ``churn_max_customers`` per partition).

``observe`` runs a batch's events in order (one script call per partition) and returns the
customers entering "at risk" by activity; a replay of the event that raised one gets it back
(``again``). ``take`` marks the silences due by the partition's time; ``forget`` retires them
once their alerts are published.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from features.commands import pipeline
from features.scripts import ScriptStore
from models.alerts.churn import ChurnSignal
from models.settings import AlertSettings

__all__ = ["ChurnStep", "ChurnStore", "DueSilences"]

logger = logging.getLogger(__name__)

_DAY: Final = 86_400.0

_COMMON: Final = r"""
local state, due, seen = KEYS[1], KEYS[2], KEYS[3]
local enter, exit_, min_daily = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local grace, enter_days, cap = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local DAY = 86400
local function num(x) return string.format('%.17g', x) end
local function load(cid)
  local raw = redis.call('HGET', state, cid)
  if not raw then return nil end
  local st = cjson.decode(raw)
  st.b, st.l, st.s = tonumber(st.b), tonumber(st.l), tonumber(st.s)
  return st
end
local function save(cid, st)
  local c = {a = st.a, b = num(st.b), l = num(st.l), i = st.i, s = num(st.s), g = st.g, k = st.k}
  redis.call('HSET', state, cid, cjson.encode(c))
end
local function signal(cid, st, reason, score, ts)
  return {cid, st.i, num(score), num(ts), reason, num(st.b), num(st.s)}
end
"""

_OBSERVE: Final = (
    _COMMON
    + r"""
-- ARGV[7..]: per event {customer id, event id, ts, clicks_24h, clicks_30d, spend_30d}
-- Returns {customer id, trigger, score, ts, reason, baseline, spend, again} per alert, then
-- the number of customers evicted
local function activity(clicks, base)
  if base <= 0 then return 0 end
  local k = math.floor(clicks)
  if k >= 10 * base + 50 then return 0 end
  local term = math.exp(-base)
  local cdf = term
  for i = 1, k do
    term = term * base / i
    cdf = cdf + term
  end
  local s = 1 - cdf
  if s < 0 then s = 0 elseif s > 1 then s = 1 end
  return s
end
local out = {}
for i = 7, #ARGV, 6 do
  local cid, eid, ts = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local c24, c30, spend = tonumber(ARGV[i + 3]), tonumber(ARGV[i + 4]), tonumber(ARGV[i + 5])
  local st = load(cid) or {a = 0, b = 0, l = -1e308, i = '', s = 0}
  if st.g and st.g[4] == eid then
    -- a replay of the event that raised the customer's last alert: that alert again
    local r = {cid, eid, st.g[1], st.g[2], st.g[3], num(st.b), num(st.s), '1'}
    for _, v in ipairs(r) do out[#out + 1] = v end
  elseif ts >= st.l then
    st.l, st.i, st.s = ts, eid, spend
    local base = math.max(c30 - c24, 0) / 29
    st.b = base
    if base < min_daily then
      st.a = 0
    else
      local score = activity(c24, base)
      if st.a == 1 then
        if score <= exit_ then st.a = 0 end
      elseif score >= enter then
        st.a = 1
        st.g = {num(score), num(ts), 'activity_drop', eid}
        for _, v in ipairs(signal(cid, st, 'activity_drop', score, ts)) do out[#out + 1] = v end
        out[#out + 1] = '0'
      end
    end
    if st.a == 1 or base < min_daily or base <= 0 then
      if st.k ~= 1 then redis.call('ZREM', due, cid) end
    else
      redis.call('ZADD', due, num(ts + grace + enter_days * DAY / base), cid)
    end
    save(cid, st)
    redis.call('ZADD', seen, num(ts), cid)
  end
end
local evicted = 0
local over = redis.call('ZCARD', seen) - cap
if over > 0 then
  local old = redis.call('ZPOPMIN', seen, over)
  for j = 1, #old, 2 do
    redis.call('HDEL', state, old[j])
    redis.call('ZREM', due, old[j])
  end
  evicted = over
end
out[#out + 1] = tostring(evicted)
return out
"""
)

_TAKE: Final = (
    _COMMON
    + r"""
-- ARGV[7]: now, ARGV[8]: limit. Returns {customer id, trigger, score, ts, reason, baseline,
-- spend, again} per customer whose silence reached churn_enter
local now = tonumber(ARGV[7])
local out = {}
local ids = redis.call('ZRANGEBYSCORE', due, '-inf', now, 'LIMIT', 0, tonumber(ARGV[8]))
for _, cid in ipairs(ids) do
  local st = load(cid)
  if not st then
    redis.call('ZREM', due, cid)
  elseif st.k == 1 then  -- taken before, never forgotten: the same alert again
    local r = {cid, st.g[4], st.g[1], st.g[2], st.g[3], num(st.b), num(st.s), '1'}
    for _, v in ipairs(r) do out[#out + 1] = v end
  elseif st.a == 1 or st.b <= 0 then
    redis.call('ZREM', due, cid)
  else
    local gap = now - st.l
    local score = 0
    if gap > grace then score = 1 - math.exp(-st.b * (gap - grace) / DAY) end
    if score >= enter then
      st.a, st.k = 1, 1
      st.g = {num(score), num(now), 'silence', st.i}
      save(cid, st)
      for _, v in ipairs(signal(cid, st, 'silence', score, now)) do out[#out + 1] = v end
      out[#out + 1] = '0'
    else  -- a rounding short of the threshold at its deadline: as ChurnWatch, no alert
      redis.call('ZREM', due, cid)
    end
  end
end
return out
"""
)

_FORGET: Final = r"""
-- KEYS: state, due; ARGV: customer ids whose silence alerts are published
for _, cid in ipairs(ARGV) do
  local raw = redis.call('HGET', KEYS[1], cid)
  if raw then
    local st = cjson.decode(raw)
    if st.k == 1 then
      st.k = nil
      redis.call('HSET', KEYS[1], cid, cjson.encode(st))
    end
  end
  redis.call('ZREM', KEYS[2], cid)
end
return 1
"""


@dataclass(frozen=True, slots=True)
class ChurnStep:
    """A click or purchase for the churn rule, with its input partition."""

    partition: int
    customer_id: str
    event_id: str
    ts: float
    clicks_24h: float
    clicks_30d: float
    spend_30d: float


@dataclass(frozen=True, slots=True)
class RaisedChurn:
    signal: ChurnSignal
    again: bool  # raised before (a replay, or a take never forgotten): publish again


@dataclass(slots=True)
class DueSilences:
    partition: int
    raised: list[RaisedChurn]


class ChurnStore(ScriptStore):
    """``ChurnWatch``'s rule with its state in Redis per input partition."""

    what = "churn state"
    scripts = {"observe": _OBSERVE, "take": _TAKE, "forget": _FORGET}

    def __init__(self, key_prefix: str, settings: AlertSettings) -> None:
        if settings.churn_exit >= settings.churn_enter:
            raise ValueError("churn_exit must be below churn_enter (hysteresis)")
        super().__init__()
        self.key_prefix = key_prefix
        self.settings = settings
        enter_days = -math.log(max(1.0 - settings.churn_enter, 1e-12))
        self._params = [
            settings.churn_enter,
            settings.churn_exit,
            settings.churn_min_daily_clicks,
            settings.churn_grace_hours * 3600.0,
            enter_days,
            settings.churn_max_customers,
        ]
        self.evicted = 0

    def keys(self, partition: int) -> tuple[str, str, str]:
        base = f"{self.key_prefix}:{{churn-{partition}}}"
        return f"{base}:state", f"{base}:due", f"{base}:seen"

    async def observe(self, steps: Sequence[ChurnStep]) -> list[RaisedChurn]:
        """A batch's clicks and purchases, in order; the customers entering "at risk"."""
        if not self.settings.churn_enabled or not steps:
            return []
        per: dict[int, list[Any]] = {}
        for s in steps:
            per.setdefault(s.partition, []).extend(
                (
                    s.customer_id,
                    s.event_id,
                    repr(float(s.ts)),
                    repr(float(s.clicks_24h)),
                    repr(float(s.clicks_30d)),
                    repr(float(s.spend_30d)),
                )
            )
        order = sorted(per)

        async def op() -> list[Any]:
            pipe = pipeline(self._require())
            for n in order:
                pipe.evalsha(self.shas["observe"], 3, *self.keys(n), *self._params, *per[n])
            return await pipe.execute()

        raised: list[RaisedChurn] = []
        for reply in await self._call(op):
            self.evicted += int(reply[-1])
            raised += _signals(reply[:-1])
        return raised

    async def take(self, partition: int, now: float, limit: int = 5_000) -> DueSilences:
        """The customers of ``partition`` whose silence reached ``churn_enter`` by ``now``."""

        async def op() -> list[bytes]:
            return await self._require().evalsha(
                self.shas["take"], 3, *self.keys(partition), *self._params, now, limit
            )

        return DueSilences(partition, _signals(await self._call(op)))

    async def forget(self, due: DueSilences) -> None:
        if not due.raised:
            return
        state, due_key, _ = self.keys(due.partition)
        ids = [r.signal.customer_id for r in due.raised]

        async def op() -> int:
            return await self._require().evalsha(self.shas["forget"], 2, state, due_key, *ids)

        await self._call(op)


def _signals(reply: Sequence[bytes]) -> list[RaisedChurn]:
    out = []
    for j in range(0, len(reply), 8):
        cid, trigger, score, ts, reason, base, spend, again = (x.decode() for x in reply[j : j + 8])
        signal = ChurnSignal(
            cid,
            trigger,
            float(score),
            float(ts),
            reason,  # type: ignore[arg-type]
            float(base),
            float(spend),
        )
        out.append(RaisedChurn(signal, again == "1"))
    return out
