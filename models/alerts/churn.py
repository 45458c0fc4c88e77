"""``churn_risk``: a customer's activity falls well below their own baseline, with hysteresis.

The baseline is the customer's daily click rate over the 30-day window excluding the last
24 hours, ``(clicks_30d - clicks_24h) / 29``; customers below ``churn_min_daily_clicks`` have
none and are never scored. Two Poisson scores, both in ``[0, 1]``:

* **activity drop**, on every click or purchase: ``1 - P(X <= clicks_24h)`` for
  ``X ~ Poisson(baseline)``, how unlikely so few clicks in a day are for this customer;
* **silence**, from the event-time watermark: ``1 - exp(-baseline * (gap - grace) / 1 day)``,
  how unlikely no click at all for ``gap`` is (the first ``churn_grace_hours`` never count, so
  nights and weekends do not alarm).

Hysteresis: a customer enters "at risk" (one alert) when a score reaches ``churn_enter`` and
leaves only when the activity score falls to ``churn_exit`` or below, so a customer hovering
around the threshold raises one alert, not one per event. The silence check needs no scan: each
observed customer has a deadline (when silence would reach ``churn_enter``) in a heap with lazy
deletion. ``ChurnWatch`` keeps its state in memory, bounded to ``churn_max_customers`` (least
recently active dropped): the reference of the rule. The worker runs the same rule with its
state in Redis, per input partition (``models.alerts.churn_store``), so the state survives
restarts and follows its partition.

>>> from models.settings import AlertSettings
>>> watch = ChurnWatch(AlertSettings())
>>> regular = {"clicks_24h": 10.0, "clicks_30d": 300.0}
>>> watch.observe("c1", "e1", 1_700_000_000.0, regular) is None
True
>>> watch.due(1_700_000_000.0 + 30 * 3600)  # 6 h past the grace: 2.5 expected clicks missing
[]
>>> [signal] = watch.due(1_700_000_000.0 + 32 * 3600)
>>> signal.reason, signal.score >= 0.95, watch.at_risk("c1")
('silence', True, True)
>>> watch.observe("c1", "e2", 1_700_300_000.0, {"clicks_24h": 1.0, "clicks_30d": 291.0})
>>> watch.at_risk("c1")  # one click back is not a recovery
True
"""

from __future__ import annotations

import heapq
import logging
import math
from collections import OrderedDict
from collections.abc import Mapping
from typing import Final, Literal, NamedTuple

from models.alerts.rules import Alert, Severity
from models.ids import alert_id
from models.settings import AlertSettings

__all__ = [
    "ChurnSignal",
    "ChurnWatch",
    "activity_score",
    "baseline_daily",
    "churn_alert",
    "silence_score",
]

logger = logging.getLogger(__name__)

_DAY: Final = 86_400.0
_HEAP_SLACK: Final = 1024


class ChurnSignal(NamedTuple):
    """A customer just entered the at-risk state."""

    customer_id: str
    trigger_event_id: str  # the customer's latest event: the alert id is stable under replay
    score: float
    ts: float
    reason: Literal["activity_drop", "silence"]
    baseline_daily: float
    spend_30d: float


def baseline_daily(features: Mapping[str, float]) -> float:
    """Clicks per day over the 29 days before the last 24 hours."""
    return max(features.get("clicks_30d", 0.0) - features.get("clicks_24h", 0.0), 0.0) / 29.0


def activity_score(clicks_24h: float, baseline: float) -> float:
    """``1 - P(X <= clicks_24h)``, ``X ~ Poisson(baseline)``: 0 when normal, near 1 when few."""
    if baseline <= 0.0:
        return 0.0
    k = int(clicks_24h)
    if k >= 10 * baseline + 50:
        return 0.0
    term = math.exp(-baseline)
    cdf = term
    for i in range(1, k + 1):
        term *= baseline / i
        cdf += term
    return min(max(1.0 - cdf, 0.0), 1.0)


def silence_score(gap_s: float, baseline: float, grace_s: float) -> float:
    """``1 - P(no click in gap - grace)`` under the baseline rate."""
    if baseline <= 0.0 or gap_s <= grace_s:
        return 0.0
    return 1.0 - math.exp(-baseline * (gap_s - grace_s) / _DAY)


class _State:
    __slots__ = ("at_risk", "baseline", "deadline", "event_id", "last_ts", "seq", "spend")

    def __init__(self) -> None:
        self.at_risk = False
        self.baseline = 0.0
        self.deadline = math.inf
        self.event_id = ""
        self.last_ts = -math.inf
        self.seq = 0
        self.spend = 0.0


class ChurnWatch:
    """Per-customer churn state with hysteresis; ``observe`` events, collect ``due`` silences."""

    def __init__(self, settings: AlertSettings) -> None:
        if settings.churn_exit >= settings.churn_enter:
            raise ValueError("churn_exit must be below churn_enter (hysteresis)")
        self.settings = settings
        self._grace_s = settings.churn_grace_hours * 3600.0
        # Silence needed beyond the grace for the score to reach churn_enter, in baseline days.
        self._enter_days = -math.log(max(1.0 - settings.churn_enter, 1e-12))
        self._states: OrderedDict[str, _State] = OrderedDict()
        self._heap: list[tuple[float, int, str]] = []
        self._seq = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._states)

    def at_risk(self, customer_id: str) -> bool:
        state = self._states.get(customer_id)
        return state is not None and state.at_risk

    def observe(
        self, customer_id: str, event_id: str, ts: float, features: Mapping[str, float]
    ) -> ChurnSignal | None:
        """A click or purchase of ``customer_id`` with its features after the event."""
        s = self.settings
        if not s.churn_enabled:
            return None
        state = self._states.get(customer_id)
        if state is None:
            state = self._states[customer_id] = _State()
            if len(self._states) > s.churn_max_customers:
                self._states.popitem(last=False)
                self.evicted += 1
        else:
            self._states.move_to_end(customer_id)
        if ts < state.last_ts:
            return None  # out of order: judged by the newer event already
        state.last_ts = ts
        state.event_id = event_id
        state.spend = features.get("spend_30d", 0.0)
        base = baseline_daily(features)
        state.baseline = base
        if base < s.churn_min_daily_clicks:
            state.deadline = math.inf
            if state.at_risk:
                state.at_risk = False  # no baseline left to fall below
            return None
        score = activity_score(features.get("clicks_24h", 0.0), base)
        signal = None
        if state.at_risk:
            if score <= s.churn_exit:
                state.at_risk = False
        elif score >= s.churn_enter:
            state.at_risk = True
            signal = ChurnSignal(
                customer_id, event_id, score, ts, "activity_drop", base, state.spend
            )
        self._schedule(customer_id, state)
        return signal

    def due(self, now_ts: float) -> list[ChurnSignal]:
        """Customers whose silence reached ``churn_enter`` by ``now_ts`` (event time)."""
        out: list[ChurnSignal] = []
        heap = self._heap
        while heap and heap[0][0] <= now_ts:
            _, seq, customer = heapq.heappop(heap)
            state = self._states.get(customer)
            if state is None or state.seq != seq or state.at_risk:
                continue
            score = silence_score(now_ts - state.last_ts, state.baseline, self._grace_s)
            if score >= self.settings.churn_enter:
                state.at_risk = True
                out.append(
                    ChurnSignal(
                        customer,
                        state.event_id,
                        score,
                        now_ts,
                        "silence",
                        state.baseline,
                        state.spend,
                    )
                )
        return out

    def _schedule(self, customer: str, state: _State) -> None:
        if state.at_risk or state.baseline <= 0.0:
            state.deadline = math.inf
            return
        state.deadline = state.last_ts + self._grace_s + self._enter_days * _DAY / state.baseline
        self._seq += 1
        state.seq = self._seq
        heapq.heappush(self._heap, (state.deadline, self._seq, customer))
        if len(self._heap) > 2 * len(self._states) + _HEAP_SLACK:
            live = [(st.deadline, st.seq, c) for c, st in self._states.items()]
            self._heap = [item for item in live if item[0] != math.inf]
            heapq.heapify(self._heap)


def churn_alert(signal: ChurnSignal, high_value_spend: float = 200.0) -> Alert:
    """The ``churn_risk`` alert: high for customers spending ``high_value_spend`` a month."""
    severity: Severity = "high" if signal.spend_30d >= high_value_spend else "medium"
    return Alert(
        alert_id=alert_id(signal.customer_id, signal.trigger_event_id, "churn_risk"),
        customer_id=signal.customer_id,
        type="churn_risk",
        severity=severity,
        score=round(min(max(signal.score, 0.0), 1.0), 6),
        trigger_event_id=signal.trigger_event_id,
        ts=signal.ts,
        details={
            "reason": signal.reason,
            "baseline_daily_clicks": round(signal.baseline_daily, 3),
            "spend_30d": signal.spend_30d,
        },
    )
