"""The slot table: each active session's LSTM state ``(h, c)``, resident on the model's device.

States live in two preallocated ``[capacity + 1, hidden]`` tensors; row ``capacity`` is a
scratch row that padded batch entries read and write. A session key maps to a row; the table
is bounded (least-recently-used sessions are evicted when full) and sessions idle longer than
``idle_s`` (event time) are expired by ``expire(now)``. Next to each row the table keeps the
session's running encoder state (time of its last event, its position) and last intent, as
numpy columns indexed by row (NaN: none yet), so that a batch reads and writes them at once.

>>> t = SlotTable(capacity=2, hidden_size=4)
>>> rows, fresh = t.acquire([("c1", "s1"), ("c2", "s1")])
>>> rows, fresh
([0, 1], [True, True])
>>> t.acquire([("c3", "s1")])  # full: the least recently used session is evicted
([0], [True])
>>> ("c1", "s1") in t, t.evictions
(False, 1)
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict, deque
from collections.abc import Hashable, Sequence
from typing import cast

import numpy as np
import torch

__all__ = ["SlotTable"]

logger = logging.getLogger(__name__)


class SlotTable:
    """Bounded, LRU, idle-expiring map of session key -> state row on ``device``."""

    def __init__(
        self,
        capacity: int,
        hidden_size: int,
        *,
        device: torch.device | str = "cpu",
        idle_s: float = 1800.0,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self.hidden_size = hidden_size
        self.device = torch.device(device)
        self.idle_s = idle_s
        self.h = torch.zeros(capacity + 1, hidden_size, device=self.device, dtype=dtype)
        self.c = torch.zeros(capacity + 1, hidden_size, device=self.device, dtype=dtype)
        self.evictions = 0
        self.expirations = 0
        self._rows: OrderedDict[Hashable, int] = OrderedDict()  # LRU order, oldest first
        self._next_sweep = -math.inf
        self._free = list(range(capacity - 1, -1, -1))
        self._key_of: list[Hashable | None] = [None] * capacity
        self.last_ts = np.full(capacity + 1, np.nan)
        self.position = np.zeros(capacity + 1, dtype=np.int64)
        self.last_abandon = np.full(capacity + 1, np.nan)
        self.prev_abandon = np.full(capacity + 1, np.nan)

    @property
    def scratch_row(self) -> int:
        return self.capacity

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, key: object) -> bool:
        return key in self._rows

    def sessions(self) -> list[Hashable]:
        return list(self._rows)

    def row(self, key: Hashable) -> int | None:
        return self._rows.get(key)

    def touch(self, keys: Sequence[Hashable]) -> None:
        """Mark present keys most recently used (so a batch never evicts its own sessions)."""
        rows = self._rows
        for k in keys:
            if k in rows:
                rows.move_to_end(k)

    def acquire(self, keys: Sequence[Hashable]) -> tuple[list[int], list[bool]]:
        """Rows for ``keys`` (distinct, at most ``capacity``), allocating (and zeroing) rows
        for new ones.

        Returns the rows and, per key, whether its state is fresh (zero). Present keys are
        marked used before any eviction, so that one call never evicts its own keys.
        """
        rows = self._rows
        out: list[int | None] = list(map(rows.get, keys))
        if None not in out:  # the common case: every session has its state here
            deque(map(rows.move_to_end, keys), maxlen=0)
            return cast(list[int], out), [False] * len(out)
        if len(keys) > self.capacity:
            raise ValueError(f"{len(keys)} sessions do not fit in {self.capacity} slots")
        fresh = [r is None for r in out]
        for k, r in zip(keys, out, strict=True):
            if r is not None:
                rows.move_to_end(k)
        new_rows: list[int] = []
        for j, k in enumerate(keys):
            if out[j] is not None:
                continue
            if not self._free:
                old_key, old_row = rows.popitem(last=False)
                self._release(old_row)
                self._free.append(old_row)
                self.evictions += 1
                logger.debug("slot table full: evicted session %s", old_key)
            r = self._free.pop()
            rows[k] = r
            self._key_of[r] = k
            new_rows.append(r)
            out[j] = r
        if new_rows:
            idx = torch.tensor(new_rows, device=self.device)
            self.h.index_fill_(0, idx, 0.0)
            self.c.index_fill_(0, idx, 0.0)
        return cast(list[int], out), fresh

    def discard(self, key: Hashable) -> bool:
        """Forget a session (it ended). Returns whether it was present."""
        r = self._rows.pop(key, None)
        if r is None:
            return False
        self._release(r)
        self._free.append(r)
        return True

    def expire(self, now: float) -> list[Hashable]:
        """Drop sessions whose last event is more than ``idle_s`` before ``now``.

        The table is swept at most once per ``idle_s / 60`` of event time (a full scan per
        batch cost more than the LSTM step), so a session may outlive ``idle_s`` by that much.
        """
        if now < self._next_sweep:
            return []
        self._next_sweep = now + self.idle_s / 60.0
        keys = list(self._rows)
        rows = np.fromiter(self._rows.values(), dtype=np.int64, count=len(keys))
        idle = self.last_ts[rows] < now - self.idle_s  # NaN (no step yet): not idle
        expired = [keys[j] for j in np.flatnonzero(idle).tolist()]
        for k in expired:
            self.discard(k)
        self.expirations += len(expired)
        return expired

    def _release(self, r: int) -> None:
        self._key_of[r] = None
        self.last_ts[r] = np.nan
        self.position[r] = 0
        self.last_abandon[r] = np.nan
        self.prev_abandon[r] = np.nan
