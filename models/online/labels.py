"""Pending propensity labels in Redis, owned by the input partition of their customer.

A scored click waits ``horizon`` seconds of event time for its label: positive when the same
customer buys within ``[ts, ts + horizon]``. The waiting clicks and the purchases that decide
them live in Redis, not in a worker's memory, so whichever worker owns the partition next
(after a rebalance, a crash or a restart) resolves them exactly as the first owner would have.

Keys, one set per input partition ``n`` (a customer's clicks and purchases share it: the record
key is the customer id), all under the hash tag ``{lbl-<n>}``, so one script call touches one
slot on Redis Cluster and no key is shared by the whole deployment:

* ``{p}:{lbl-n}:clicks``: hash, click ``event_id`` -> a tag byte and the packed click
  (``PendingClick.pack``: event time, click-time probability, customer id, model inputs). The
  tag is ``p`` while pending, ``0`` or ``1`` (the label) once taken.
* ``{p}:{lbl-n}:due``: zset of click ids by deadline (``ts + horizon``).
* ``{p}:{lbl-n}:buys``: hash, customer id -> the event times of the customer's recent
  purchases (a replayed purchase adds nothing); ``{p}:{lbl-n}:buyers`` scores each customer by
  their latest purchase, so customers who stopped buying are pruned.
* ``{p}:{lbl-n}:done``: zset of resolved click ids by the event time they resolved at, so a
  click replayed after its label was learned is not queued again (kept ``2 x horizon`` of
  event time, at most ``max_pending`` ids).

The cycle, as for offer windows (``models.decisioning.outcomes``): ``add`` queues a batch's
clicks and purchases (one script call per partition, idempotent); ``take`` resolves the clicks
whose deadline passed the partition's event time and marks them with their label; the caller
learns them, publishes them, then ``forget`` retires them. A click taken but never forgotten
(the worker died between the two) comes back from the next ``take`` with ``again=True`` and the
same label: published again, not learned again.

The label is decided by event time alone, so the order in which the clicks and purchases
topics are read does not change it (a purchase read before its click still makes it positive).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from features.commands import pipeline
from features.scripts import ScriptStore

__all__ = ["DueLabels", "LabelStore", "PendingClick", "ResolvedLabel"]

logger = logging.getLogger(__name__)

_HEAD: Final = struct.Struct("<ddH")  # ts, proba, len(customer id)

_ADD: Final = r"""
-- KEYS: clicks, due, buys, buyers, done
-- ARGV: horizon, max_pending, n, {event_id, packed click} x n, m, {customer_id, ts} x m
-- Returns {queued, dropped}
local clicks, due, buys, buyers, done = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local h, cap = tonumber(ARGV[1]), tonumber(ARGV[2])
local i = 3
local queued, dropped = 0, 0
local n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  local eid, rec = ARGV[i], ARGV[i + 1]
  i = i + 2
  if not redis.call('ZSCORE', done, eid) and redis.call('HSETNX', clicks, eid, 'p' .. rec) == 1 then
    redis.call('ZADD', due, struct.unpack('<d', rec) + h, eid)
    queued = queued + 1
  end
end
local over = redis.call('ZCARD', due) - cap
if over > 0 then  -- the oldest clicks go unlabeled, as in the in-memory buffer
  local old = redis.call('ZPOPMIN', due, over)
  for j = 1, #old, 2 do
    redis.call('HDEL', clicks, old[j])
    redis.call('ZADD', done, old[j + 1], old[j])
  end
  dropped = over
end
local m = tonumber(ARGV[i]); i = i + 1
-- a purchase is kept while a click that is still waiting could need it: the oldest waiting
-- click is the head of the due set (deadline - horizon), however far the partition's time is
local head = redis.call('ZRANGE', due, 0, 0, 'WITHSCORES')[2]
local floor = head and (tonumber(head) - 2 * h) or nil
for _ = 1, m do
  local cid, raw = ARGV[i], ARGV[i + 1]
  i = i + 2
  local ts = tonumber(raw)
  local oldest = ts - 2 * h
  if floor and floor < oldest then oldest = floor end
  local kept, seen = {}, false
  for t in string.gmatch(redis.call('HGET', buys, cid) or '', '%S+') do
    local v = tonumber(t)
    if v == ts then seen = true end
    if v >= oldest then kept[#kept + 1] = t end
  end
  if not seen then kept[#kept + 1] = raw end
  redis.call('HSET', buys, cid, table.concat(kept, ' '))
  redis.call('ZADD', buyers, 'GT', ts, cid)
end
return {queued, dropped}
"""

_TAKE: Final = r"""
-- KEYS: clicks, due, buys, buyers, done
-- ARGV: now, horizon, max_done, limit
-- Returns {event_id, label '0'/'1', packed click, again '0'/'1'} per due click
local clicks, due, buys, buyers, done = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local now, h = tonumber(ARGV[1]), tonumber(ARGV[2])
local out = {}
local ids = redis.call('ZRANGEBYSCORE', due, '-inf', now, 'LIMIT', 0, tonumber(ARGV[4]))
for _, eid in ipairs(ids) do
  local v = redis.call('HGET', clicks, eid)
  if not v then
    redis.call('ZREM', due, eid)
  else
    local tag, rec, again = string.sub(v, 1, 1), string.sub(v, 2), '1'
    if tag == 'p' then
      again, tag = '0', '0'
      local ts, _, len, pos = struct.unpack('<ddH', rec)
      local cid = string.sub(rec, pos, pos + len - 1)
      for t in string.gmatch(redis.call('HGET', buys, cid) or '', '%S+') do
        local b = tonumber(t)
        if b >= ts and b <= ts + h then tag = '1' end
      end
      redis.call('HSET', clicks, eid, tag .. rec)
    end
    out[#out + 1] = eid
    out[#out + 1] = tag
    out[#out + 1] = rec
    out[#out + 1] = again
  end
end
-- purchases older than two horizons before the oldest click still waiting (taken or not)
-- can no longer label any click
local oldest = now
local head = redis.call('ZRANGE', due, 0, 0, 'WITHSCORES')[2]
if head and tonumber(head) < oldest then oldest = tonumber(head) end
local stale = redis.call('ZRANGEBYSCORE', buyers, '-inf', oldest - 2 * h, 'LIMIT', 0, 1000)
for _, cid in ipairs(stale) do redis.call('HDEL', buys, cid) end
if #stale > 0 then redis.call('ZREM', buyers, unpack(stale)) end
redis.call('ZREMRANGEBYSCORE', done, '-inf', now - 2 * h)
redis.call('ZREMRANGEBYRANK', done, 0, -(tonumber(ARGV[3]) + 1))
return out
"""

_FORGET: Final = r"""
-- KEYS: clicks, due, done; ARGV: now, event ids...
for j = 2, #ARGV do
  redis.call('ZADD', KEYS[3], ARGV[1], ARGV[j])
  redis.call('HDEL', KEYS[1], ARGV[j])
  redis.call('ZREM', KEYS[2], ARGV[j])
end
return #ARGV - 1
"""


@dataclass(frozen=True, slots=True)
class PendingClick:
    """A scored click waiting for its label."""

    event_id: str
    customer_id: str
    ts: float
    proba: float  # the prediction made at click time, for progressive validation
    x: bytes  # model inputs, packed float64 (``PropensityModel.predict_clicks``)

    def pack(self) -> bytes:
        cid = self.customer_id.encode()
        return _HEAD.pack(self.ts, self.proba, len(cid)) + cid + self.x

    @classmethod
    def unpack(cls, event_id: str, raw: bytes) -> PendingClick:
        ts, proba, n = _HEAD.unpack_from(raw)
        start = _HEAD.size
        cid = raw[start : start + n].decode()
        return cls(event_id, cid, ts, proba, raw[start + n :])


@dataclass(frozen=True, slots=True)
class ResolvedLabel:
    """A click whose horizon closed, with its label; ``again``: resolved before, by this or
    another worker, but never forgotten (publish again, do not learn again)."""

    click: PendingClick
    positive: bool
    again: bool


@dataclass(slots=True)
class DueLabels:
    """What one ``take`` resolved for a partition, to ``forget`` once published."""

    partition: int
    now: float
    labels: list[ResolvedLabel]


class LabelStore(ScriptStore):
    """Pending propensity labels per input partition in Redis (see the module docstring).

    ``key_prefix`` is the feature store's; ``horizon_s`` the label horizon; ``max_pending``
    the most clicks one partition keeps waiting (beyond it the oldest go unlabeled).
    """

    what = "propensity labels"
    scripts = {"add": _ADD, "take": _TAKE, "forget": _FORGET}

    def __init__(self, key_prefix: str, horizon_s: float, max_pending: int = 200_000) -> None:
        if horizon_s <= 0:
            raise ValueError(f"horizon_s must be positive, got {horizon_s}")
        super().__init__()
        self.key_prefix = key_prefix
        self.horizon_s = horizon_s
        self.max_pending = max_pending
        self.queued = 0
        self.dropped = 0

    def keys(self, partition: int) -> tuple[str, str, str, str, str]:
        """clicks, due, buys, buyers, done of one input partition."""
        base = f"{self.key_prefix}:{{lbl-{partition}}}"
        return tuple(f"{base}:{k}" for k in ("clicks", "due", "buys", "buyers", "done"))  # type: ignore[return-value]

    async def add(
        self,
        clicks: Sequence[tuple[int, PendingClick]],
        purchases: Sequence[tuple[int, str, float]],
    ) -> tuple[int, int]:
        """Queue ``(partition, click)`` and note ``(partition, customer id, ts)`` purchases;
        replays change nothing. Returns (clicks queued, oldest clicks dropped). One round
        trip, one script call per partition."""
        per: dict[int, tuple[list[Any], list[Any]]] = {}
        for partition, c in clicks:
            per.setdefault(partition, ([], []))[0].extend((c.event_id, c.pack()))
        for partition, cid, ts in purchases:
            per.setdefault(partition, ([], []))[1].extend((cid, repr(ts)))
        if not per:
            return 0, 0
        order = sorted(per)

        async def op() -> list[Any]:
            pipe = pipeline(self._require())
            for partition in order:
                c_args, p_args = per[partition]
                argv = [self.horizon_s, self.max_pending, len(c_args) // 2, *c_args]
                pipe.evalsha(
                    self.shas["add"], 5, *self.keys(partition), *argv, len(p_args) // 2, *p_args
                )
            return await pipe.execute()

        replies = await self._call(op)
        queued = sum(int(r[0]) for r in replies)
        dropped = sum(int(r[1]) for r in replies)
        self.queued += queued
        self.dropped += dropped
        if dropped:
            logger.warning(
                "labels: %d pending clicks dropped unlabeled (max_pending=%d per partition)",
                dropped,
                self.max_pending,
            )
        return queued, dropped

    async def take(self, partition: int, now: float, limit: int = 5_000) -> DueLabels:
        """Resolve the clicks of ``partition`` whose deadline is at or before ``now`` (that
        partition's event time; every purchase up to it must have been ``add``-ed)."""

        async def op() -> list[bytes]:
            return await self._require().evalsha(
                self.shas["take"],
                5,
                *self.keys(partition),
                now,
                self.horizon_s,
                self.max_pending,
                limit,
            )

        reply = await self._call(op)
        labels = [
            ResolvedLabel(
                click=PendingClick.unpack(reply[j].decode(), reply[j + 2]),
                positive=reply[j + 1] == b"1",
                again=reply[j + 3] == b"1",
            )
            for j in range(0, len(reply), 4)
        ]
        return DueLabels(partition, now, labels)

    async def forget(self, due: DueLabels) -> None:
        """Retire published labels: a replay of their clicks queues nothing."""
        if not due.labels:
            return
        clicks, due_key, _, _, done = self.keys(due.partition)
        ids = [r.click.event_id for r in due.labels]

        async def op() -> int:
            return await self._require().evalsha(
                self.shas["forget"], 3, clicks, due_key, done, due.now, *ids
            )

        await self._call(op)

    async def pending(self, partition: int) -> int:
        """Clicks of ``partition`` waiting for their label."""

        async def op() -> int:
            return await self._require().zcard(self.keys(partition)[1])

        return int(await self._call(op))
