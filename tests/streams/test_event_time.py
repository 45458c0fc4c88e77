"""Event time per input partition, and the bound on an event's ts, without a broker."""

from __future__ import annotations

import time

import orjson
import pytest

from streams.agents import Pipeline
from streams.clock import EventTime
from streams.settings import Settings, WorkerSettings


class Wall:
    """A hand-moved monotonic clock."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_a_lagging_topic_holds_time_back_until_it_goes_idle() -> None:
    wall = Wall()
    t = EventTime(max_ahead_s=300.0, idle_after_s=5.0, clock=wall)
    t.observe(("purchases", 0), 10_000.0)  # live
    t.observe(("clicks", 0), 4_000.0)  # still catching up on an old backlog
    assert t.now() == 4_000.0
    wall.t = 2.0
    t.observe(("clicks", 0), 4_100.0)
    assert t.now() == 4_100.0, "the backlog's own time, not the live topic's"
    wall.t = 8.0  # clicks quiet for 6 s: idle, no longer holds time back
    assert t.now() == pytest.approx(10_003.0), "purchases moved on 5 s after going quiet"


def test_time_advances_with_the_wall_clock_and_never_goes_back() -> None:
    wall = Wall()
    t = EventTime(idle_after_s=5.0, clock=wall)
    assert t.now() == 0.0
    t.observe(("clicks", 0), 1_000.0)
    wall.t = 4.0
    assert t.now() == 1_000.0, "a pause shorter than idle_after_s does not move time"
    wall.t = 60.0
    assert t.now() == pytest.approx(1_055.0), "quiet since 0, idle since 5"
    t.observe(("clicks", 1), 500.0)  # a partition that wakes up far behind
    assert t.now() == pytest.approx(1_055.0)
    t.observe(("clicks", 0), 1_010.0)  # late for the moved-on watermark: it stays
    assert t.partition_times()[0] == pytest.approx(1_055.0)
    t.revoke([("clicks", 0), ("clicks", 1)])
    assert t.now() == pytest.approx(1_055.0)


def test_a_revoked_partition_no_longer_holds_time_back() -> None:
    t = EventTime(clock=Wall())
    t.observe(("clicks", 0), 100.0)
    t.observe(("clicks", 1), 900.0)
    assert t.now() == 100.0
    t.revoke([("clicks", 0)])
    assert t.now() == 900.0


def test_each_partition_number_keeps_its_own_time() -> None:
    wall = Wall()
    t = EventTime(idle_after_s=5.0, clock=wall)
    t.assign([("clicks", 0), ("purchases", 0), ("clicks", 1), ("clicks", 2)])
    t.observe(("clicks", 0), 5_000.0)
    t.observe(("purchases", 0), 4_000.0)  # this customer group's purchases lag
    t.observe(("clicks", 1), 9_000.0)
    # partition 2 has not been read from yet: its unread records could hold purchases that
    # decide what is due, so its time is held; once idle, it follows the worker's time
    assert t.partition_times() == {0: 4_000.0, 1: 9_000.0, 2: 0.0}
    wall.t = 6.0
    assert t.partition_times()[2] == t.now() == pytest.approx(9_001.0)
    wall.t = 0.0
    t.revoke([("clicks", 1)])
    assert set(t.partition_times()) == {0, 2}, "a revoked partition is no longer expired here"


def test_the_bound_is_the_earlier_of_record_and_wall_clock_plus_the_allowance() -> None:
    t = EventTime(max_ahead_s=300.0)
    assert t.bound(kafka_ts=1_000.0, wall=5_000.0) == 1_300.0
    assert t.bound(kafka_ts=9_000.0, wall=5_000.0) == 5_300.0  # a producer clock ahead
    assert t.bound(kafka_ts=None, wall=5_000.0) == 5_300.0


def _record(ts: float, kafka_ts: float) -> tuple[str, int, int, bytes, bytes, float]:
    doc = {"event_id": "e1", "customer_id": "c1", "session_id": "s1", "ts": ts,
           "action": "view", "item_id": "i1", "category": "home"}  # fmt: skip
    return ("clicks", 0, 7, b"c1", orjson.dumps(doc), kafka_ts)


def test_a_ts_beyond_the_bound_is_clamped_by_default() -> None:
    pipeline = Pipeline(Settings())
    kafka_ts = float(int(time.time()) - 60)  # a record written a minute ago
    valid, dead, clamped, _, _ = pipeline.validate([_record(kafka_ts + 23 * 3600, kafka_ts)])
    assert (len(valid), dead, clamped) == (1, [], 1)
    assert valid[0].ts == kafka_ts + 300.0
    ok, _, n, partitions, sources = pipeline.validate([_record(kafka_ts + 299, kafka_ts)])
    assert (ok[0].ts, n, partitions, sources) == (kafka_ts + 299, 0, {"c1": 0}, [0])


def test_a_ts_beyond_the_bound_can_be_dead_lettered_instead() -> None:
    settings = Settings(worker=WorkerSettings(future_ts="dead_letter", max_ts_ahead_s=60.0))
    pipeline = Pipeline(settings)
    kafka_ts = float(int(time.time()) - 60)  # a record written a minute ago
    valid, [dead], clamped, _, _ = pipeline.validate([_record(kafka_ts + 3600, kafka_ts)])
    assert (valid, clamped) == ([], 0)
    assert dead.reason == (
        f"ts {kafka_ts + 3600:.0f} is 3600s ahead of its record's timestamp (allowed 60s)"
    )
    assert (dead.source_topic, dead.partition, dead.offset) == ("clicks", 0, 7)
