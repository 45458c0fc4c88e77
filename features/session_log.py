"""The session log: each session's recent events in Redis, to rebuild its model state.

One bounded list per session under ``{prefix}:{<customer_id>}:sess:<session_id>`` (the
customer's hash tag, so a customer's keys share a cluster slot), newest last, trimmed to
``max_events`` and expiring ``ttl_s`` after the session's last event. Entries are opaque JSON
values (the intent model writes ``IntentStep.to_record()``).

``exchange`` reads the lists of the sessions to rebuild and appends a batch's new entries in
one pipeline (one round trip); the reads come first, so they see the lists as they were before
this batch. ``aexchange`` is the same on an asyncio client.

>>> SessionLog.key_of("ss", ("c42", "s7"))
'ss:{c42}:sess:s7'
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
import redis
import redis.asyncio

from features.batch import CommandBatch
from features.keys import customer_key

__all__ = ["Retry", "SessionLog"]

logger = logging.getLogger(__name__)

SessionKey = tuple[str, str]  # (customer_id, session_id)
# How async round trips ride out Redis outages: ``FeatureStore.with_retry`` in the worker.
Retry = Callable[[str, Callable[[], Awaitable[Any]]], Awaitable[Any]]


class SessionLog:
    """Bounded per-session event lists; batched, one round trip per batch."""

    def __init__(
        self,
        client: redis.Redis | redis.asyncio.Redis,
        *,
        prefix: str = "ss",
        max_events: int = 64,
        ttl_s: float = 3600.0,
        retry: Retry | None = None,
    ) -> None:
        if max_events < 1:
            raise ValueError("max_events must be >= 1")
        if ttl_s <= 0:
            raise ValueError("ttl_s must be > 0")
        self.client = client
        self.prefix = prefix
        self.max_events = max_events
        self.ttl_s = ttl_s
        self.retry = retry
        self._ttl_ms = max(1, int(ttl_s * 1000))

    @staticmethod
    def key_of(prefix: str, key: SessionKey) -> str:
        return customer_key(prefix, key[0], f"sess:{key[1]}")

    def key(self, key: SessionKey) -> str:
        return self.key_of(self.prefix, key)

    def _queue(
        self,
        pipe: Any,
        appends: Sequence[tuple[SessionKey, Any]],
        read: Sequence[SessionKey],
    ) -> list[SessionKey]:
        read_keys = list(dict.fromkeys(read))
        for k in read_keys:
            pipe.lrange(self.key(k), -self.max_events, -1)
        grouped: dict[SessionKey, list[bytes]] = {}
        for k, value in appends:
            grouped.setdefault(k, []).append(orjson.dumps(value))
        for k, values in grouped.items():
            rk = self.key(k)
            pipe.rpush(rk, *values)
            pipe.ltrim(rk, -self.max_events, -1)
            pipe.pexpire(rk, self._ttl_ms)
        return read_keys

    def _decode(
        self, read_keys: list[SessionKey], replies: list[Any]
    ) -> dict[SessionKey, list[Any]]:
        return {k: [orjson.loads(v) for v in replies[i]] for i, k in enumerate(read_keys)}

    def exchange(
        self, appends: Sequence[tuple[SessionKey, Any]], read: Sequence[SessionKey] = ()
    ) -> dict[SessionKey, list[Any]]:
        """Read ``read`` sessions' entries (oldest first), then append ``appends``."""
        if not appends and not read:
            return {}
        pipe = self.client.pipeline(transaction=False)
        read_keys = self._queue(pipe, appends, read)
        return self._decode(read_keys, pipe.execute())

    async def aexchange(
        self, appends: Sequence[tuple[SessionKey, Any]], read: Sequence[SessionKey] = ()
    ) -> dict[SessionKey, list[Any]]:
        """``exchange`` on a ``redis.asyncio`` client, as one script call (``CommandBatch``)."""
        if not appends and not read:
            return {}

        async def run() -> dict[SessionKey, list[Any]]:
            pipe = CommandBatch(self.client)  # type: ignore[arg-type]
            read_keys = self._queue(pipe, appends, read)
            return self._decode(read_keys, await pipe.execute())

        if self.retry is None:
            return await run()
        return await self.retry("session log", run)

    def read(self, keys: Sequence[SessionKey]) -> dict[SessionKey, list[Any]]:
        """Entries of ``keys`` (e.g. a finished session's clicks for fine-tuning)."""
        return self.exchange((), keys)

    def delete(self, keys: Sequence[SessionKey]) -> int:
        """Drop sessions' lists (one round trip; cluster-safe: one key per command)."""
        if not keys:
            return 0
        pipe = self.client.pipeline(transaction=False)
        for k in keys:
            pipe.delete(self.key(k))
        return sum(int(n) for n in pipe.execute())
