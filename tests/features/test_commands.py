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
