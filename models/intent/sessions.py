"""When sessions end, in Redis, per input partition: the fine-tuner's labels follow the partition.

A session ends with a purchase, or when it has been idle for ``session_idle_minutes`` of event
time; only then is its label known (``session_label``) and the session learned by the online
fine-tuner, from its steps in the Redis session log (``features.session_log``). The pending
ends live here, not in a worker's memory, so a session opened on one worker and ended after
its partition moved (or after a restart) is still learned, whole, by the partition's owner.

One zset per input partition ``n``, ``{p}:{sess-<n>}:due``: member ``[customer_id,
session_id]`` (JSON), score the session's last step plus the idle timeout (only ever raised).
``note`` records a batch's steps and purchases (one round trip); ``take`` pops the sessions
idle by the partition's event time (atomic: one worker learns each, at most once).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Final

import orjson

from features.commands import pipeline
from features.scripts import ScriptStore

__all__ = ["SessionEnds"]

logger = logging.getLogger(__name__)

SessionKey = tuple[str, str]

_TAKE: Final = r"""
-- KEYS[1]: due; ARGV: now, limit. Pops and returns the sessions idle by now.
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
if #ids > 0 then redis.call('ZREM', KEYS[1], unpack(ids)) end
return ids
"""


class SessionEnds(ScriptStore):
    """Open sessions' idle deadlines per input partition (see the module docstring)."""

    what = "session ends"
    scripts = {"take": _TAKE}

    def __init__(self, key_prefix: str, idle_s: float) -> None:
        super().__init__()
        self.key_prefix = key_prefix
        self.idle_s = idle_s

    def key(self, partition: int) -> str:
        return f"{self.key_prefix}:{{sess-{partition}}}:due"

    async def note(
        self,
        stepped: Sequence[tuple[int, str, str, float]],
        ended: Sequence[tuple[int, str, str]],
    ) -> None:
        """Sessions stepped ``(partition, customer, session, ts)`` stay open until ``ts`` plus
        the idle timeout; sessions ``ended`` by a purchase are open no more."""
        opened: dict[int, dict[bytes, float]] = {}
        for partition, cid, sid, ts in stepped:
            members = opened.setdefault(partition, {})
            m = orjson.dumps([cid, sid])
            members[m] = max(members.get(m, 0.0), ts + self.idle_s)
        closed: dict[int, list[bytes]] = {}
        for partition, cid, sid in ended:
            closed.setdefault(partition, []).append(orjson.dumps([cid, sid]))
        if not opened and not closed:
            return

        async def op() -> list[int]:
            pipe = pipeline(self._require())
            for partition, members in opened.items():
                pipe.zadd(self.key(partition), members, gt=True)
            for partition, gone in closed.items():
                pipe.zrem(self.key(partition), *gone)
            return await pipe.execute()

        await self._call(op)

    async def take(self, partition: int, now: float, limit: int = 5_000) -> list[SessionKey]:
        """Pop the sessions of ``partition`` idle by ``now`` (its event time)."""

        async def op() -> list[bytes]:
            return await self._require().evalsha(
                self.shas["take"], 1, self.key(partition), now, limit
            )

        return [tuple(orjson.loads(m)) for m in await self._call(op)]  # type: ignore[misc]
