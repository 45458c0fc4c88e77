"""Commands of several stores sent in one event-loop turn go out as one round trip, against a
real Valkey; each caller gets its own replies and its own errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.exceptions as rex
from redis.asyncio import Redis

from features.commands import coalesce, pipeline


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Redis]:
    c = Redis.from_url(redis_url)
    yield c
    await c.aclose()


def _count_round_trips(client: Redis, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many pipelines the client writes (redis-py's own method, counted on the way)."""
    sent = [0]
    real = client.pipeline

    def counted(*args: Any, **kwargs: Any) -> Any:
        pipe = real(*args, **kwargs)
        execute = pipe.execute

        async def execute_counted(*a: Any, **k: Any) -> Any:
            sent[0] += 1
            return await execute(*a, **k)

        pipe.execute = execute_counted  # type: ignore[method-assign]
        return pipe

    monkeypatch.setattr(client, "pipeline", counted)
    return sent


async def _store_call(client: Redis, key: str, n: int) -> list[Any]:
    q = pipeline(client)
    for i in range(n):
        q.zadd(key, {f"m{i}": float(i)})
    q.zcard(key)
    return await q.execute()


@pytest.mark.parametrize("merged", [False, True])
async def test_concurrent_callers_share_one_round_trip(
    client: Redis, unique: Callable[[str], str], monkeypatch: pytest.MonkeyPatch, merged: bool
) -> None:
    if merged:
        coalesce(client)
    sent = _count_round_trips(client, monkeypatch)
    keys = [unique("co") for _ in range(4)]
    replies = await asyncio.gather(*(_store_call(client, k, i + 1) for i, k in enumerate(keys)))
    assert [r[-1] for r in replies] == [1, 2, 3, 4], "each caller's own replies"
    assert sent[0] == (1 if merged else 4)


async def test_an_error_reaches_only_the_caller_whose_command_failed(
    client: Redis, unique: Callable[[str], str]
) -> None:
    coalesce(client)
    text = unique("co")
    await client.set(text, "not a sorted set")

    async def wrong() -> list[Any]:
        q = pipeline(client)
        q.zcard(unique("co"))
        q.zadd(text, {"m": 1.0})  # WRONGTYPE
        return await q.execute()

    ok, failed = await asyncio.gather(
        _store_call(client, unique("co"), 2), wrong(), return_exceptions=True
    )
    assert ok == [1, 1, 2]
    assert isinstance(failed, rex.ResponseError) and "WRONGTYPE" in str(failed)


async def test_a_lost_connection_fails_every_caller_of_the_round_trip(
    unique: Callable[[str], str],
) -> None:
    dead = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    coalesce(dead)
    results = await asyncio.gather(
        *(_store_call(dead, unique("co"), 1) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, (rex.ConnectionError, OSError)) for r in results), results
    await dead.aclose()


@pytest.mark.parametrize(
    "args",
    [
        ("SET", "k", "v"),
        ("ZADD", "k", "GT", 1.5, "m", 0.1, "é", 1e300, b"\x00\xff", -3, 7),
        ("CONFIG GET", "maxmemory"),
        (b"CLIENT SETNAME", "x"),
        ("EVALSHA", "ab" * 20, 2, "{c}:a", "{c}:b", b'["1","2"]'),
    ],
)
def test_hiredis_packing_writes_the_bytes_redis_py_writes(args: tuple[Any, ...]) -> None:
    from redis.asyncio.connection import Connection

    from features.commands import _hiredis_packed

    assert b"".join(_hiredis_packed(Connection)().pack_command(*args)) == b"".join(
        Connection().pack_command(*args)
    )


def test_hiredis_packing_rejects_what_redis_py_rejects() -> None:
    from redis.asyncio.connection import Connection

    from features.commands import _hiredis_packed

    for bad in (None, True):
        with pytest.raises(rex.DataError):
            _hiredis_packed(Connection)().pack_command("SET", "k", bad)


@pytest.mark.parametrize("cluster", [False, True], ids=["server", "cluster"])
async def test_the_stores_clients_pack_with_hiredis(
    request: pytest.FixtureRequest, cluster: bool
) -> None:
    """The feature store's own client, on a server and on a real cluster, packs with hiredis
    (also on the cluster nodes it finds after start-up), and its scripts still answer."""
    from features.events import parse_event
    from features.settings import RedisSettings
    from features.store import FeatureStore

    url = request.getfixturevalue("redis_cluster_url" if cluster else "redis_url")
    store = FeatureStore(RedisSettings(url=url, cluster=cluster, key_prefix="hp"))
    await store.start()
    try:
        event = parse_event(
            "clicks",
            b'{"event_id":"e1","customer_id":"c1","ts":1.8e9,"session_id":"s",'
            b'"item_id":"i","category":"toys","action":"view","price":2.5}',
            now=1.8e9,
        )
        (result,) = await store.apply([event], [None])
        assert result.features["clicks_24h"] == 1.0 and not result.duplicate
        client = store.client
        if cluster:
            assert {n.connection_class.__name__ for n in client.get_nodes()} == {
                "HiredisConnection"
            }
        else:
            assert client.connection_pool.connection_class.__name__ == "HiredisConnection"
    finally:
        await store.close()
