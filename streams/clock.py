"""The worker's event time: one watermark per input partition, bounded by the broker's clock.

Every expiry (propensity labels, cart timers, intent sessions, churn by silence, offer
windows) runs off ``EventTime.now()``. Flink's rule, applied to Kafka input partitions:

- **A watermark per input partition** (topic, partition), moved only by that partition's
  events. Once a partition has had no event for ``idle_after_s`` it advances with the wall
  clock from there, so expiries happen on quiet streams too, while a replayed or scripted
  stream with old timestamps keeps its own time. A pause shorter than that (a rebalance, a
  slow fetch) does not move it: records that are still to be read may hold purchases that
  decide a label or convert an offer.
- **Bounded by the broker's clock.** ``bound(kafka_ts, wall)`` is the latest ``ts`` an event
  may carry: its record's timestamp (or the wall clock, whichever is earlier) plus
  ``max_ahead_s``. The pipeline clamps or dead-letters a later ``ts`` before it gets here, so
  one event stamped a day ahead cannot expire a day of state.
- **The minimum over the active partitions.** The worker's time is the slowest partition
  that saw an event in the last ``idle_after_s`` wall seconds: a topic that lags behind
  another (clicks still catching up while purchases are live) holds expiries back instead of
  having its customers' labels resolved before their purchases are read. A partition that
  has been quiet for longer is idle and does not hold time back; when every partition is
  idle, time is the most advanced one.
- **Never backwards**, as Flink's watermarks: a partition that wakes up behind the worker's
  time does not pull it back; its events are late, and expiries already done stay done.
- A revoked partition is forgotten (``revoke``): it no longer holds this worker's time.
- **Per partition number** (``partition_times``): the same rule over the input topics'
  partitions of one number (a customer's clicks, purchases and feedback share it: the record
  key is the customer id), for state kept per partition, such as offer windows. An assigned
  partition that has had no event yet follows the worker's time.

>>> t = EventTime(max_ahead_s=300.0, idle_after_s=5.0, clock=lambda: 100.0)
>>> t.now()
0.0
>>> t.bound(kafka_ts=1_000.0, wall=2_000.0)
1300.0
>>> t.observe(("clicks", 0), 1_000.0)
>>> t.observe(("purchases", 0), 1_500.0)
>>> t.now()  # the clicks partition is behind
1000.0
>>> t.revoke([("clicks", 0)])
>>> t.now()
1500.0
>>> t.observe(("clicks", 1), 1_200.0)  # wakes up behind: late, time stays
>>> t.now()
1500.0
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeAlias

__all__ = ["EventTime", "Partition"]

Partition: TypeAlias = tuple[str, int]  # (input topic, partition)


@dataclass(slots=True)
class _Watermark:
    ts: float  # the latest event time this partition reached
    seen_at: float  # wall clock (monotonic) of this partition's latest event

    def at(self, now: float, idle_after_s: float) -> float:
        """The watermark at wall time ``now``: once the partition has been quiet for
        ``idle_after_s``, it moves on with the wall clock from there."""
        return self.ts + max(0.0, now - self.seen_at - idle_after_s)


class EventTime:
    """Per-partition watermarks; ``now()`` is the time every expiry runs off.

    Parameters
    ----------
    max_ahead_s
        How far an event's ``ts`` may be ahead of its record's timestamp (see ``bound``).
    idle_after_s
        A partition with no event for this many wall seconds no longer holds time back.
    clock
        The monotonic wall clock (for tests).
    """

    def __init__(
        self,
        max_ahead_s: float = 300.0,
        idle_after_s: float = 5.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.max_ahead_s = max_ahead_s
        self.idle_after_s = idle_after_s
        self._clock = time.monotonic if clock is None else clock
        self._marks: dict[Partition, _Watermark] = {}
        self._last = 0.0
        # the input partitions this worker owns, with the wall time each was assigned at
        self._assigned: dict[Partition, float] = {}
        self._last_by: dict[int, float] = {}

    def bound(self, kafka_ts: float | None, wall: float) -> float:
        """The latest ``ts`` an event in a record stamped ``kafka_ts`` may carry, at ``wall``."""
        base = wall if kafka_ts is None else min(kafka_ts, wall)
        return base + self.max_ahead_s

    def observe(self, partition: Partition, ts: float) -> None:
        """An event of ``partition`` at event time ``ts`` (already within ``bound``)."""
        now = self._clock()
        mark = self._marks.get(partition)
        if mark is None:
            self._marks[partition] = _Watermark(ts, now)
            return
        mark.ts = max(ts, mark.at(now, self.idle_after_s))
        mark.seen_at = now

    def assign(self, partitions: Iterable[Partition]) -> None:
        """Input partitions this worker now owns. Until one has an event read, or has been
        assigned for ``idle_after_s``, its number's time is held (``partition_times``)."""
        now = self._clock()
        for partition in partitions:
            self._assigned.setdefault(partition, now)

    def revoke(self, partitions: Iterable[Partition]) -> None:
        """Forget partitions this worker no longer owns."""
        for partition in partitions:
            self._marks.pop(partition, None)
            self._assigned.pop(partition, None)
        owned = {n for _, n in self._assigned} | {n for _, n in self._marks}
        for n in set(self._last_by) - owned:
            del self._last_by[n]

    def partition_times(self) -> dict[int, float]:
        """The time of each owned partition number: the rule of ``now`` over its topics'
        partitions, the worker's time for one without events yet; never backwards.

        A number with a topic partition assigned less than ``idle_after_s`` ago and not read
        from yet keeps the time it had (0 for a new one): its unread records (a purchases
        backlog behind the clicks already read) may still move what is due.
        """
        now = self._clock()
        unread = {
            n
            for p, at in self._assigned.items()
            if p not in self._marks and now - at <= self.idle_after_s
            for n in (p[1],)
        }
        groups: dict[int, list[tuple[float, bool]]] = {}
        for (_, n), m in self._marks.items():
            t = m.at(now, self.idle_after_s)
            groups.setdefault(n, []).append((t, now - m.seen_at <= self.idle_after_s))
        worker = self.now()
        times: dict[int, float] = {}
        for n in {n for _, n in self._assigned} | set(groups):
            if n in unread:
                times[n] = self._last_by.get(n, 0.0)
                continue
            marks = groups.get(n)
            if marks is None:
                t = worker
            else:
                active = [t for t, is_active in marks if is_active]
                t = min(active) if active else max(t for t, _ in marks)
            times[n] = self._last_by[n] = max(self._last_by.get(n, 0.0), t)
        return times

    def now(self) -> float:
        """The minimum over active partitions, or the maximum when all are idle (0 if none);
        never less than a time it returned before."""
        if not self._marks:
            return self._last
        now = self._clock()
        marks = self._marks.values()
        idle = self.idle_after_s
        times = [(m.at(now, idle), now - m.seen_at <= idle) for m in marks]
        active = [t for t, is_active in times if is_active]
        t = min(active) if active else max(t for t, _ in times)
        self._last = max(self._last, t)
        return self._last
