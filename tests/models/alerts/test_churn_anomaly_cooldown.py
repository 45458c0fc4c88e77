"""Churn hysteresis, purchase anomalies after warm-up, and alert cool-downs."""

from __future__ import annotations

import random

import pytest

from features.events import Purchase, PurchaseItem
from models.alerts.anomaly import PurchaseAnomaly
from models.alerts.churn import ChurnWatch, activity_score, churn_alert, silence_score
from models.alerts.cooldown import AlertCooldown
from models.settings import AlertSettings

T0 = 1_700_000_000.0
HOUR = 3600.0


def feats(clicks_24h: float, clicks_30d: float, spend: float = 0.0) -> dict[str, float]:
    return {"clicks_24h": clicks_24h, "clicks_30d": clicks_30d, "spend_30d": spend}


def test_scores() -> None:
    assert activity_score(10, 10.0) < 0.5 < activity_score(2, 10.0) < activity_score(0, 10.0)
    assert activity_score(0, 0.0) == 0.0
    assert silence_score(20 * HOUR, 10.0, 24 * HOUR) == 0.0
    assert silence_score(48 * HOUR, 10.0, 24 * HOUR) == pytest.approx(1.0, abs=1e-4)


def test_churn_hysteresis_does_not_flap() -> None:
    watch = ChurnWatch(AlertSettings(churn_enter=0.95, churn_exit=0.6))
    baseline = 290.0  # 10 clicks a day before the last 24 h
    # Activity hovers around the enter threshold: 3, 5, 2, 6, 3 clicks in 24 h.
    entered = []
    for n, c in enumerate([3, 5, 2, 6, 3, 4, 3]):
        s = watch.observe("c1", f"e{n}", T0 + n * HOUR, feats(c, baseline + c, spend=500.0))
        entered.append(s is not None)
        assert watch.at_risk("c1") or n == 0
    assert entered == [True, False, False, False, False, False, False], "one alert, no flapping"
    # Back to normal (10 a day): leaves the state; a new drop alerts again.
    assert watch.observe("c1", "e9", T0 + 10 * HOUR, feats(10, 300)) is None
    assert not watch.at_risk("c1")
    signal = watch.observe("c1", "e10", T0 + 11 * HOUR, feats(1, 291, spend=500.0))
    assert signal is not None and signal.reason == "activity_drop"
    alert = churn_alert(signal)
    assert (alert.type, alert.severity, alert.trigger_event_id) == ("churn_risk", "high", "e10")


def test_churn_by_silence_once_and_not_without_baseline() -> None:
    watch = ChurnWatch(AlertSettings(churn_grace_hours=24))
    watch.observe("busy", "b1", T0, feats(10, 300))
    watch.observe("rare", "r1", T0, feats(0, 10))  # 1/3 click a day: no baseline
    assert watch.due(T0 + 30 * HOUR) == []
    [signal] = watch.due(T0 + 40 * HOUR)
    assert (signal.customer_id, signal.reason, signal.trigger_event_id) == ("busy", "silence", "b1")
    assert watch.due(T0 + 400 * HOUR) == [], "already at risk: no second alert"
    # A later event reschedules: the earlier deadline is stale.
    watch.observe("late", "l1", T0, feats(10, 300))
    watch.observe("late", "l2", T0 + 20 * HOUR, feats(12, 312))
    assert [s.customer_id for s in watch.due(T0 + 35 * HOUR)] == []


def test_churn_memory_is_bounded() -> None:
    watch = ChurnWatch(AlertSettings(churn_max_customers=100))
    for n in range(1000):
        watch.observe(f"c{n}", f"e{n}", T0 + n, feats(10, 300))
    assert len(watch) == 100 and watch.evicted == 900
    assert len(watch.due(T0 + 1000 * HOUR)) == 100


def buy(n: int, cid: str, ts: float, total: float, qty: int) -> Purchase:
    line = PurchaseItem(f"i{n}", "toys", total / qty, qty)
    return Purchase(f"p{n}", cid, None, ts, f"o{n}", (line,), total, "EUR")


def test_half_space_trees_flag_an_outlier_only_after_warm_up() -> None:
    rng = random.Random(3)
    model = PurchaseAnomaly(warmup=300, seed=3)
    outlier = buy(0, "c1", T0, 30_000.0, 50)
    assert model.check(outlier) is None, "no alert during warm-up, however strange"
    flagged = 0
    for n in range(1, 800):
        p = buy(n, f"c{n % 40}", T0 + n * HOUR, rng.uniform(20, 90), rng.randint(1, 3))
        flagged += model.check(p) is not None
    assert flagged <= 8, f"{flagged} of 800 normal purchases flagged"
    alert = model.check(buy(900, "c7", T0 + 801 * HOUR + 60, 30_000.0, 50))
    assert alert is not None and (alert.type, alert.severity) == ("anomaly", "high")
    assert alert.details["basket_size"] == 50


def test_cooldown_per_customer_and_type_bounded() -> None:
    cd = AlertCooldown.from_minutes({"anomaly": 10.0}, default_minutes=1.0, max_entries=2)
    assert cd.allow("c1", "anomaly", T0, "a1")
    assert not cd.allow("c1", "anomaly", T0 + 300, "a2")
    assert not cd.allow("c1", "anomaly", T0 - 300, "a0"), "out of order cannot squeeze in"
    assert cd.allow("c1", "anomaly", T0 + 300, "a1"), "the same alert id is a retry"
    assert cd.allow("c2", "anomaly", T0 + 300, "b1") and cd.allow("c1", "other", T0, "x1")
    assert cd.allow("c1", "anomaly", T0 + 601, "a3")
    assert cd.suppressed == 2
    assert cd.allow("c9", "other", T0, "z") and len(cd._last) == 2
