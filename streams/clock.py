"""The worker's event clock: when label horizons, cart timers and outcome windows expire.

``now()`` is the latest event time seen plus the wall time elapsed since it was seen, so
expiries happen on idle streams too, while scripted streams with old timestamps are judged by
their own time. One clock per worker, over all the partitions it reads; ``Pipeline`` advances
it per event and passes ``now()`` explicitly to every expiry.

>>> clock = EventClock()
>>> clock.now()
0.0
>>> clock.observe(1_700_000_000.0)
>>> 1_700_000_000.0 <= clock.now() < 1_700_000_001.0
True
"""

from __future__ import annotations

import time

__all__ = ["EventClock"]


class EventClock:
    """Event time that keeps moving with the wall clock between events."""

    __slots__ = ("_seen_at", "_watermark")

    def __init__(self) -> None:
        self._watermark = 0.0
        self._seen_at = time.monotonic()

    def observe(self, ts: float) -> None:
        if ts > self.now():
            self._watermark = ts
            self._seen_at = time.monotonic()

    def now(self) -> float:
        if self._watermark == 0.0:
            return 0.0
        return self._watermark + (time.monotonic() - self._seen_at)
