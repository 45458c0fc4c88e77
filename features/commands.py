"""Commands sent together, on one Redis server or a Redis Cluster: one round trip per node.

``pipeline(client)`` queues commands as a redis-py pipeline does (``q.evalsha(...)``,
``q.zadd(...)``) and ``execute()`` sends them in one pipeline: on one server that is one round
trip; on a cluster redis-py's cluster pipeline groups the commands by the node that serves
their keys and writes each node's share at once, all nodes in parallel, so a batch costs one
round trip per node involved, however many hash slots it touches. Either way ``execute()``
returns the replies in the order queued and raises the first error (``NoScriptError``
included, which the stores handle by reloading).

Every store here is a Lua script, and redis-py blocks ``pipe.evalsha`` on a cluster
("blocked when running redis in cluster mode") although its cluster pipeline routes
``EVALSHA`` by its keys like any other command (the keys of one call share a hash tag): so
``EVALSHA`` is queued with ``execute_command``. A command answered with ``MOVED``, ``ASK`` or
``TRYAGAIN`` (a slot being moved) is sent again on its own by redis-py, which follows the
redirection; when that gives up (``ClusterError``) the stores retry the batch.

After a node stops answering (``ConnectionError``, ``TimeoutError``, ``CLUSTERDOWN``) the
client is closed, so the next call asks the cluster again who serves which slot (the replica
promoted in the dead master's place); redis-py's cluster pipeline does that only before its
own retries, and the stores give it none (their retries are counted, ``n_retries``).

redis-py's cluster client (8.1) closes all of its connections when it refreshes its slot map
(every fifth ``MOVED``, on ``CLUSTERDOWN``) while other commands may still be on them; one
caught mid-connect fails with ``AttributeError: 'NoneType' object has no attribute
'writelines'`` from inside redis-py. That is a lost connection, so it is raised as
``redis.ConnectionError`` here (``lost_connection``, also used by ``features/scripts.py`` for
the stores' direct calls), which the stores retry (``tests/features/
test_cluster_operations.py`` and ``tests/streams/test_cluster_e2e.py`` met it while slots
moved).

On one server, the commands that several stores send in the same turn of the event loop (the
independent reads and writes a batch overlaps with ``asyncio.gather``) go out as one pipeline:
one round trip where there were as many as stores (``coalesce(client)``, on by default:
``RedisSettings.coalesce``). Each caller still gets its own replies and its own first error.

Every command is packed into the wire protocol by hiredis in C (``hiredis_packing(client)``):
redis-py's asyncio connections pack each argument in Python (its synchronous client already
uses hiredis), ~2 us per argument, and a batch's script calls carry every key as an argument
(~13 per event: 30 us of the worker's ~200 us per event, measured with cProfile). The bytes on
the wire are the same.

>>> queued = pipeline(None)
>>> _ = queued.zadd("k", {"a": 1.0})
>>> queued.calls
[('zadd', ('k', {'a': 1.0}), {})]
"""

from __future__ import annotations

import asyncio
import functools
import weakref
from typing import Any

import hiredis
from redis import exceptions as rex
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection

__all__ = ["Commands", "coalesce", "hiredis_packing", "lost_connection", "pipeline"]

_Calls = list[tuple[str, tuple[Any, ...], dict[str, Any]]]


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
        merger = _COALESCERS.get(client)
        if merger is not None:
            return await merger.execute(self.calls)
        cluster = isinstance(client, RedisCluster)
        pipe = client.pipeline(transaction=False)
        for name, args, kw in self.calls:
            if cluster and name == "evalsha":
                pipe.execute_command("EVALSHA", *args, **kw)
            else:
                getattr(pipe, name)(*args, **kw)
        if not cluster:
            return list(await pipe.execute())
        try:
            return list(await pipe.execute())
        except _STALE:
            await client.aclose()  # the next call asks the cluster who serves which slot
            raise
        except AttributeError as exc:
            raise lost_connection(exc) from exc


# Errors after which the cluster client's slot map may be wrong (a node died, a replica took
# over): redis-py's cluster pipeline forgets the map before its own retries only, and the
# stores make it retry nothing (their retries are counted), so it is forgotten here.
_STALE = (rex.ConnectionError, rex.TimeoutError, rex.ClusterDownError, rex.SlotNotCoveredError)


def lost_connection(exc: AttributeError) -> Exception:
    """``exc`` as a ``redis.ConnectionError`` when it was raised inside redis-py on a
    connection it closed under the command (see the module's docstring); else ``exc``."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None or not tb.tb_frame.f_globals.get("__name__", "").startswith("redis."):
        return exc
    return rex.ConnectionError(f"redis-py closed the connection under a command: {exc}")


class _Coalescer:
    """Sends the command lists queued by callers in one turn of the event loop as one
    pipeline, and hands each caller its replies (or its first error)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._queued: list[tuple[_Calls, asyncio.Future[list[Any]]]] = []

    async def execute(self, calls: _Calls) -> list[Any]:
        if not calls:
            return []
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        if not self._queued:  # the first of this turn: send once the others had their turn
            loop.call_soon(self._flush)
        self._queued.append((calls, future))
        return await future

    def _flush(self) -> None:
        queued, self._queued = self._queued, []
        task = asyncio.ensure_future(self._send(queued))
        _SENDING.add(task)
        task.add_done_callback(_SENDING.discard)

    async def _send(self, queued: list[tuple[_Calls, asyncio.Future[list[Any]]]]) -> None:
        pipe = self._client.pipeline(transaction=False)
        for calls, _ in queued:
            for name, args, kw in calls:
                getattr(pipe, name)(*args, **kw)
        try:
            replies = list(await pipe.execute(raise_on_error=False))
        except asyncio.CancelledError:
            for _, future in queued:
                future.cancel()
            raise
        except Exception as exc:  # the connection: every caller's commands failed alike
            for _, future in queued:
                if not future.done():
                    future.set_exception(exc)
            return
        at = 0
        for calls, future in queued:
            mine, at = replies[at : at + len(calls)], at + len(calls)
            if future.done():  # its caller was cancelled
                continue
            error = next((r for r in mine if isinstance(r, Exception)), None)
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(mine)


_COALESCERS: weakref.WeakKeyDictionary[Any, _Coalescer] = weakref.WeakKeyDictionary()
_SENDING: set[asyncio.Future[None]] = set()  # pipelines on their way (a reference each)


def coalesce(client: Any) -> None:
    """Merge the commands sent through ``pipeline(client)`` in one turn of the event loop into
    one round trip (one Redis server; a cluster client is left as it is)."""
    if not isinstance(client, RedisCluster):
        _COALESCERS[client] = _Coalescer(client)


def pipeline(client: Any) -> Commands:
    """Commands to send together on ``client`` (``redis.asyncio`` server or cluster client)."""
    return Commands(client)


def hiredis_packing(client: Any) -> None:
    """Make ``client``'s connections (server or cluster, plain or TLS) pack commands with
    hiredis; connections it already opened keep packing in Python."""
    if isinstance(client, RedisCluster):
        # one dict, shared with its NodesManager: nodes it discovers later get the class too
        kwargs = client.connection_kwargs
        kwargs["connection_class"] = _hiredis_packed(kwargs["connection_class"])
        for node in client.nodes_manager.startup_nodes.values():
            node.connection_class = _hiredis_packed(node.connection_class)
    else:
        pool = client.connection_pool
        pool.connection_class = _hiredis_packed(pool.connection_class)


@functools.cache
def _hiredis_packed(cls: type[AbstractConnection]) -> type[AbstractConnection]:
    if getattr(cls, "_hiredis_packed", False):
        return cls

    class Packed(cls):  # type: ignore[valid-type,misc]
        _hiredis_packed = True

        def pack_command(self, *args: Any) -> list[bytes]:
            # as redis-py's: a command name with spaces ("CONFIG GET") is several arguments
            name = args[0]
            if isinstance(name, str):
                args = (*name.encode().split(), *args[1:])
            elif b" " in name:
                args = (*name.split(), *args[1:])
            try:
                return [hiredis.pack_command(args)]
            except TypeError as exc:  # None, bool, ...: redis-py's own error for them
                raise rex.DataError(str(exc)) from exc

    Packed.__name__ = Packed.__qualname__ = f"Hiredis{cls.__name__}"
    return Packed
