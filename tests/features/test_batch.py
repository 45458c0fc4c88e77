"""CommandBatch against the real Valkey: same replies as a redis-py pipeline, one call."""

from __future__ import annotations

from collections.abc import Callable

import redis.asyncio

from features.batch import CommandBatch


async def _both(
    aredis: redis.asyncio.Redis, prefix: str, queue: Callable[[object, str], None]
) -> tuple[list[object], list[object]]:
    """Run ``queue`` through a pipeline on one key set and a CommandBatch on a copy."""
    pipe = aredis.pipeline(transaction=False)
    queue(pipe, f"{prefix}:p")
    batch = CommandBatch(aredis)
    queue(batch, f"{prefix}:b")
    return list(await pipe.execute()), await batch.execute()


async def test_replies_match_a_pipeline(
    aredis: redis.asyncio.Redis, unique: Callable[[str], str]
) -> None:
    def queue(p: object, k: str) -> None:
        z, h, lst = f"{k}:{{z}}", f"{k}:{{h}}", f"{k}:{{l}}"
        p.zadd(z, {"a": 1.25, "b": 0.1 + 0.2}, gt=True)  # type: ignore[attr-defined]
        p.zincrby(z, 2.5, "a")  # type: ignore[attr-defined]
        p.zadd(z, {"a": 1.0}, gt=True)  # GT: lower score ignored  # type: ignore[attr-defined]
        p.zrange(z, 0, -1, withscores=True)  # type: ignore[attr-defined]
        p.zrevrange(z, 0, 0, withscores=True)  # type: ignore[attr-defined]
        p.zrevrange(z, 0, -1)  # type: ignore[attr-defined]
        p.zremrangebyrank(z, 0, -2)  # type: ignore[attr-defined]
        p.zrange(z, 0, -1)  # type: ignore[attr-defined]
        p.pexpire(z, 60_000)  # type: ignore[attr-defined]
        p.pexpire(f"{k}:missing", 60_000)  # type: ignore[attr-defined]
        p.rpush(lst, '{"x": 1}', "two")  # type: ignore[attr-defined]
        p.ltrim(lst, -1, -1)  # type: ignore[attr-defined]
        p.lrange(lst, 0, -1)  # type: ignore[attr-defined]
        p.hgetall(h)  # type: ignore[attr-defined]
        p.hget(h, "nope")  # type: ignore[attr-defined]
        p.exists(h)  # type: ignore[attr-defined]
        p.exists(z)  # type: ignore[attr-defined]

    piped, batched = await _both(aredis, unique("cb"), queue)
    assert batched == piped
    assert batched[3] == [(b"b", 0.1 + 0.2), (b"a", 3.75)]  # scores round-trip exactly


async def test_one_call_and_recovers_a_flushed_script_cache(
    aredis: redis.asyncio.Redis, unique: Callable[[str], str]
) -> None:
    prefix = unique("cb")
    await aredis.script_flush()
    batch = CommandBatch(aredis, max_commands=3)
    for n in range(7):
        batch.zadd(f"{prefix}:{{{n}}}", {"m": float(n)})
    batch.zrange(f"{prefix}:{{6}}", 0, -1, withscores=True)
    assert len(batch) == 8
    replies = await batch.execute()  # NOSCRIPT -> loaded -> run again (ZADD is idempotent)
    assert replies == [1] * 7 + [[(b"m", 6.0)]]
    assert await batch.execute() == [0] * 7 + [[(b"m", 6.0)]]  # run again: same commands
    assert await CommandBatch(aredis).execute() == []


def test_cluster_groups_follow_hash_slots() -> None:
    batch = CommandBatch(None)
    for key in ("a:{c1}:x", "a:{c2}:x", "a:{c1}:y", "a:{c3}:x", "a:{c2}:y"):
        batch.exists(key)
    groups = batch._groups(batch._commands, cluster=True)
    assert sorted(groups) == [[0, 2], [1, 4], [3]]
    assert batch._groups(batch._commands, cluster=False) == [[0, 1, 2, 3, 4]]


async def test_zmerge_adds_or_raises_then_trims_and_expires(
    aredis: redis.asyncio.Redis, unique: Callable[[str], str]
) -> None:
    inc, gt = unique("zm") + ":{i}", unique("zm") + ":{g}"
    batch = CommandBatch(aredis)
    batch.zmerge(inc, {"a": 1.0, "b": 2.0, "c": 0.5}, incr=True, keep=2, ttl_ms=60_000)
    batch.zmerge(inc, {"c": 3.0}, incr=True, keep=2, ttl_ms=60_000)  # c: 0.5 was trimmed
    batch.zmerge(gt, {"x": 5.0, "y": 1.0}, incr=False, keep=5, ttl_ms=1_000)
    batch.zmerge(gt, {"x": 4.0, "y": 2.0}, incr=False, keep=5, ttl_ms=1_000)
    assert await batch.execute() == [1, 1, 1, 1]
    assert await aredis.zrange(inc, 0, -1, withscores=True) == [(b"b", 2.0), (b"c", 3.0)]
    assert await aredis.zrange(gt, 0, -1, withscores=True) == [(b"y", 2.0), (b"x", 5.0)]
    assert 0 < await aredis.pttl(gt) <= 1_000 and await aredis.pttl(inc) > 1_000
