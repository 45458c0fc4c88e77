"""Commands sent together, on one Redis server or a Redis Cluster.

On one server ``pipeline(client)`` is redis-py's pipeline: one round trip. redis-py's cluster
client refuses ``EVALSHA`` in a pipeline ("blocked when running redis in cluster mode"), and
every store here is a Lua script, so on a cluster the queued commands are sent concurrently
instead, each routed by redis-py to the node that owns its first key (the scripts' keys of one
call share a hash tag, so one node has them all): one round trip per node in parallel, not
one after another. Either way ``execute()`` returns the replies in the order queued and raises
the first error (``NoScriptError`` included, which the stores handle by reloading).

>>> queued = pipeline(None)
>>> _ = queued.zadd("k", {"a": 1.0})
>>> queued.calls
[('zadd', ('k', {'a': 1.0}), {})]
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio.cluster import RedisCluster

__all__ = ["Commands", "pipeline"]


class Commands:
    """Queue ``client``'s commands as on a pipeline (``q.evalsha(...)``, ``q.zadd(...)``), then
    ``await q.execute()``."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)

        def queue(*args: Any, **kwargs: Any) -> Commands:
            self.calls.append((name, args, kwargs))
            return self

        return queue

    async def execute(self) -> list[Any]:
        client = self._client
        if isinstance(client, RedisCluster):
            return list(
                await asyncio.gather(
                    *(getattr(client, name)(*args, **kw) for name, args, kw in self.calls)
                )
            )
        pipe = client.pipeline(transaction=False)
        for name, args, kw in self.calls:
            getattr(pipe, name)(*args, **kw)
        return list(await pipe.execute())


def pipeline(client: Any) -> Commands:
    """Commands to send together on ``client`` (``redis.asyncio`` server or cluster client)."""
    return Commands(client)
