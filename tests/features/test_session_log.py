"""The Redis session log, and the intent rebuild it enables (real Valkey)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import redis
import redis.asyncio
import torch

from features.session_log import SessionLog
from models.intent.batcher import IntentBatcher
from models.settings import IntentSettings
from tests.models.intent.test_batcher import interleaved, make_net

torch.set_num_threads(1)


def test_exchange_reads_before_appending_and_bounds(
    redis_client: redis.Redis, unique: Callable[[str], str]
) -> None:
    log = SessionLog(redis_client, prefix=unique("ss"), max_events=3, ttl_s=60.0)
    k = ("c1", "s1")
    assert log.key(k) == f"{log.prefix}:{{c1}}:sess:s1"
    assert log.exchange([(k, [1, "a"]), (k, [2, "b"])], [k]) == {k: []}
    assert log.exchange([(k, [3, "c"]), (k, [4, "d"])], [k, k]) == {k: [[1, "a"], [2, "b"]]}
    assert log.read([k]) == {k: [[2, "b"], [3, "c"], [4, "d"]]}  # trimmed to the newest 3
    assert 0 < redis_client.pttl(log.key(k)) <= 60_000
    assert log.read([("c1", "other")]) == {("c1", "other"): []}
    assert log.delete([k]) == 1 and log.read([k]) == {k: []}
    assert log.exchange([], []) == {}


def test_one_round_trip_per_batch(redis_client: redis.Redis, unique: Callable[[str], str]) -> None:
    log = SessionLog(redis_client, prefix=unique("ss"))
    calls = []
    real = redis_client.pipeline

    def counting(*a: object, **kw: object) -> object:
        pipe = real(*a, **kw)
        execute = pipe.execute

        def once(*ea: object, **ekw: object) -> object:
            calls.append(len(pipe.command_stack))
            return execute(*ea, **ekw)

        pipe.execute = once
        return pipe

    redis_client.pipeline = counting  # type: ignore[method-assign]
    keys = [(f"c{i}", f"s{i}") for i in range(50)]
    log.exchange([(k, [i]) for i, k in enumerate(keys)], keys)
    assert len(calls) == 1 and calls[0] == 50 + 3 * 50


def test_async_client(redis_url: str, unique: Callable[[str], str]) -> None:
    async def main() -> dict[tuple[str, str], list[object]]:
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            log = SessionLog(client, prefix=unique("ss"))
            k = ("c9", "s9")
            await log.aexchange([(k, {"a": 1})])
            return await log.aexchange([(k, {"a": 2})], [k])
        finally:
            await client.aclose()

    assert asyncio.run(main()) == {("c9", "s9"): [{"a": 1}]}


def _worker(log: SessionLog | None, max_sessions: int = 1000) -> IntentBatcher:
    net, enc = make_net()
    return IntentBatcher(net, enc, IntentSettings(device="cpu", max_sessions=max_sessions), log=log)


def _assert_close(a: list[dict[str, float]], b: list[dict[str, float]]) -> None:
    for x, y in zip(a, b, strict=True):
        for k in x:
            assert abs(x[k] - y[k]) < 1e-5, (k, x, y)


def test_intent_after_rebalance_equals_intent_without(
    redis_client: redis.Redis, unique: Callable[[str], str]
) -> None:
    steps = interleaved(20, 10, seed=1)
    batches = [steps[i : i + 16] for i in range(0, len(steps), 16)]
    ref = _worker(None)
    reference = [r for b in batches for r in ref.step_many(b)]

    log = SessionLog(redis_client, prefix=unique("ss"), max_events=64)
    first = _worker(log)
    out = [r for b in batches[: len(batches) // 2] for r in first.step_many(b)]
    # Rebalance: a fresh worker (no states) takes over every partition mid-session.
    second = _worker(log)
    out += [r for b in batches[len(batches) // 2 :] for r in second.step_many(b)]
    assert second.replayed_steps > 0
    _assert_close(out, reference)


def test_intent_after_eviction_equals_intent_without(
    redis_client: redis.Redis, unique: Callable[[str], str]
) -> None:
    steps = interleaved(20, 6, seed=2)
    batches = [steps[i : i + 4] for i in range(0, len(steps), 4)]
    ref = _worker(None)
    reference = [r for b in batches for r in ref.step_many(b)]
    small = _worker(SessionLog(redis_client, prefix=unique("ss")), max_sessions=4)
    out = [r for b in batches for r in small.step_many(b)]
    assert small.slots.evictions > 0 and small.replayed_steps > 0
    _assert_close(out, reference)
