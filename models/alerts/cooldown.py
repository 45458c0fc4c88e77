"""Alert cool-down: at most one alert per customer and type within a configurable time.

Every alert has a dedup key, ``<type>:<customer_id>``; ``AlertCooldown.allow`` lets an alert
through when no other alert of that key lies within the type's cool-down (event time, on either
side, so out-of-order events cannot squeeze one in). The same ``alert_id`` is always let through
again: a batch retried after a Redis outage, or a replay, re-emits the alerts it emitted before
rather than losing them. State is in memory, bounded to ``max_entries`` keys (oldest dropped),
so a restarted worker may repeat an alert once.

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

from collections import OrderedDict
from collections.abc import Mapping

__all__ = ["AlertCooldown", "dedup_key"]


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
