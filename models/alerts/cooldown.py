"""Alert cool-down: at most one alert per customer and type within a configurable time.

Every alert has a dedup key, ``<type>:<customer_id>``; ``AlertCooldown.allow`` lets an alert
through when no other alert of that key lies within the type's cool-down (event time, on either
side, so out-of-order events cannot squeeze one in). The same ``alert_id`` is always let through
again: a batch retried after a Redis outage, or a replay, re-emits the alerts it emitted before
rather than losing them. ``AlertCooldown`` keeps its state in memory (bounded to
``max_entries`` keys, oldest dropped): the reference, used offline. The worker uses
``CooldownStore``, the same rule with its memory in Redis under the customer's hash tag, so a
restarted worker or a partition's next owner continues the cool-downs.

>>> cooldown = AlertCooldown({"churn_risk": 3600.0}, default_s=60.0)
>>> cooldown.allow("c1", "churn_risk", 1000.0, "a1")
True
>>> cooldown.allow("c1", "churn_risk", 2000.0, "a2")
False
>>> cooldown.allow("c1", "churn_risk", 1000.0, "a1")  # the same alert again: a retry
True
>>> cooldown.allow("c1", "churn_risk", 4600.0, "a3"), cooldown.allow("c1", "anomaly", 2000.0, "a4")
(True, True)
>>> dedup_key("c1", "anomaly"), cooldown.suppressed
('anomaly:c1', 1)
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, Final

from features.commands import pipeline
from features.keys import customer_key
from features.scripts import ScriptStore

__all__ = ["AlertCooldown", "CooldownStore", "dedup_key"]

logger = logging.getLogger(__name__)


def dedup_key(customer_id: str, alert_type: str) -> str:
    """The key under which alerts of one type for one customer are deduplicated."""
    return f"{alert_type}:{customer_id}"


class AlertCooldown:
    """Per (customer, type) cool-down in event time, bounded memory.

    Parameters
    ----------
    cooldown_s
        Seconds per alert type; 0 disables the cool-down of that type.
    default_s
        Seconds for types not in ``cooldown_s``.
    max_entries
        Dedup keys remembered (the least recently emitted are forgotten first).
    """

    def __init__(
        self,
        cooldown_s: Mapping[str, float] | None = None,
        default_s: float = 3600.0,
        max_entries: int = 500_000,
    ) -> None:
        self.cooldown_s = dict(cooldown_s or {})
        self.default_s = default_s
        self.max_entries = max_entries
        self._last: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self.suppressed = 0

    @classmethod
    def from_minutes(
        cls, minutes: Mapping[str, float], default_minutes: float, max_entries: int
    ) -> AlertCooldown:
        return cls({k: v * 60.0 for k, v in minutes.items()}, default_minutes * 60.0, max_entries)

    def allow(self, customer_id: str, alert_type: str, ts: float, alert_id: str) -> bool:
        """True (and remembered) unless another alert of this key is within the cool-down."""
        window = self.cooldown_s.get(alert_type, self.default_s)
        key = dedup_key(customer_id, alert_type)
        last = self._last.get(key)
        if last is not None:
            last_ts, last_id = last
            if last_id == alert_id:
                return True
            if abs(ts - last_ts) < window:
                self.suppressed += 1
                return False
        self._last[key] = (ts, alert_id)
        self._last.move_to_end(key)
        if len(self._last) > self.max_entries:
            self._last.popitem(last=False)
        return True


_ALLOW: Final = r"""
-- KEYS[1]: the customer's cool-down hash, type -> 'ts|alert_id' of the last alert let through
-- ARGV: ttl_ms, then {type, ts, alert_id, window_s} per alert, in order. Returns 1/0 each.
local out = {}
for i = 2, #ARGV, 4 do
  local kind, ts, id, window = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2], tonumber(ARGV[i + 3])
  local last = redis.call('HGET', KEYS[1], kind)
  local ok = 1
  if last then
    local sep = string.find(last, '|', 1, true)
    local last_ts, last_id = tonumber(string.sub(last, 1, sep - 1)), string.sub(last, sep + 1)
    if last_id ~= id and math.abs(ts - last_ts) < window then ok = 0 end
    if last_id == id then ok = 2 end
  end
  if ok == 1 then redis.call('HSET', KEYS[1], kind, ARGV[i + 1] .. '|' .. id) end
  out[#out + 1] = ok > 0 and 1 or 0
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return out
"""


class CooldownStore(ScriptStore):
    """``AlertCooldown``'s rule with its memory in Redis, under each customer's hash tag
    (``{p}:{cid}:cooldown``), so a restarted worker or a partition's next owner applies the
    cool-downs the previous one started. Keys expire after the longest cool-down.

    ``allow`` decides a batch of alerts in order: one script call per customer, one round
    trip. The same ``alert_id`` is let through again (a retry or a replay re-emits it).
    """

    what = "alert cool-downs"
    scripts = {"allow": _ALLOW}

    def __init__(
        self,
        key_prefix: str,
        cooldown_s: Mapping[str, float] | None = None,
        default_s: float = 3600.0,
    ) -> None:
        super().__init__()
        self.key_prefix = key_prefix
        self.cooldown_s = dict(cooldown_s or {})
        self.default_s = default_s
        longest = max([default_s, *self.cooldown_s.values()])
        self._ttl_ms = int(max(longest, 1.0) * 2_000)  # either side of an alert's time
        self.suppressed = 0

    @classmethod
    def from_minutes(
        cls, key_prefix: str, minutes: Mapping[str, float], default_minutes: float
    ) -> CooldownStore:
        return cls(key_prefix, {k: v * 60.0 for k, v in minutes.items()}, default_minutes * 60.0)

    async def allow(self, alerts: Sequence[tuple[str, str, float, str]]) -> list[bool]:
        """For each ``(customer_id, type, event ts, alert_id)``: let it through?"""
        if not alerts:
            return []
        per: dict[str, list[int]] = {}
        for k, (cid, _, _, _) in enumerate(alerts):
            per.setdefault(cid, []).append(k)
        cids = list(per)

        async def op() -> list[Any]:
            client = self._require()
            pipe = pipeline(client)
            for cid in cids:
                argv: list[Any] = [self._ttl_ms]
                for k in per[cid]:
                    _, kind, ts, alert_id = alerts[k]
                    argv += [
                        kind,
                        repr(float(ts)),
                        alert_id,
                        self.cooldown_s.get(kind, self.default_s),
                    ]
                pipe.evalsha(
                    self.shas["allow"], 1, customer_key(self.key_prefix, cid, "cooldown"), *argv
                )
            return await pipe.execute()

        out = [True] * len(alerts)
        for cid, reply in zip(cids, await self._call(op), strict=True):
            for k, ok in zip(per[cid], reply, strict=True):
                out[k] = bool(ok)
        self.suppressed += out.count(False)
        return out
