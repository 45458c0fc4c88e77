"""The plumbing every Redis store built on Lua scripts shares.

A ``ScriptStore`` holds the connection (the feature store's, so one pool serves the worker),
loads its scripts on ``start``, reloads them once when Redis lost them (a restart, a failover,
``SCRIPT FLUSH``), and rides out outages with the worker's retry policy
(``FeatureStore.with_retry``), or turns them into ``FeatureStoreError`` without one.

>>> class Counter(ScriptStore):
...     what = "counters"
...     scripts = {"incr": "return redis.call('INCR', KEYS[1])"}
>>> Counter().shas["incr"] == hashlib.sha1(Counter.scripts["incr"].encode()).hexdigest()
True
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar, TypeVar

from redis import exceptions as rex
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from features.commands import lost_connection
from features.session_log import Retry
from features.store import FeatureStoreError

__all__ = ["ScriptStore"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

# ClusterError: a cluster that is failing over (CLUSTERDOWN) or moving a slot (redis-py's
# "TTL exhausted" after ASK/TRYAGAIN/MOVED)
_TRANSIENT = (
    rex.ConnectionError,
    rex.TimeoutError,
    rex.BusyLoadingError,
    rex.TryAgainError,
    rex.ClusterError,
    OSError,
)


class ScriptStore:
    """Base of the Redis stores run by Lua scripts: subclasses set ``what`` (for logs and
    errors) and ``scripts`` (name -> source) and call ``self.shas[name]`` with EVALSHA inside
    an ``op`` they pass to ``_call``."""

    what: ClassVar[str] = "state"
    scripts: ClassVar[Mapping[str, str]] = {}

    def __init__(self) -> None:
        self.shas = {k: hashlib.sha1(s.encode()).hexdigest() for k, s in self.scripts.items()}
        self._client: Redis | RedisCluster | None = None
        self._retry: Retry | None = None

    async def start(self, client: Redis | RedisCluster, retry: Retry | None = None) -> None:
        """Use ``client`` (the feature store's connection) and load the scripts; ``retry``
        (``FeatureStore.with_retry``) rides out outages."""
        self._client = client
        self._retry = retry
        await self._call(self._load)

    @property
    def started(self) -> bool:
        return self._client is not None

    def _require(self) -> Redis | RedisCluster:
        if self._client is None:
            raise FeatureStoreError(f"{type(self).__name__} is not started: await start() first")
        return self._client

    async def _load(self) -> None:
        client = self._require()
        for script in self.scripts.values():
            await client.script_load(script)

    async def _call(self, op: Callable[[], Awaitable[T]]) -> T:
        """Run ``op``; reload lost scripts once; outages are retried with ``retry`` (when
        given to ``start``) and end as ``FeatureStoreError``."""

        async def once() -> T:
            try:
                try:
                    return await op()
                except rex.NoScriptError:
                    logger.warning("Redis lost the %s scripts; reloading them", self.what)
                    await self._load()
                    return await op()
            except AttributeError as exc:  # redis-py's cluster client, see features/commands.py
                raise lost_connection(exc) from exc

        if self._retry is not None:
            result: Any = await self._retry(self.what, once)
            return result  # type: ignore[no-any-return]
        try:
            return await once()
        except _TRANSIENT as exc:
            raise FeatureStoreError(
                f"Redis unavailable for {self.what}: {exc}", transient=True
            ) from exc
