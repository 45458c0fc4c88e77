"""One model per deployment, through a real Valkey: merges, generations, races, cold starts."""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable

import numpy as np
import pytest
from redis.asyncio import Redis

from models.bundle import ModelBundle, SharedModels
from models.checkpoint import CheckpointError
from models.decisioning.bandit import LinUCB
from models.settings import ModelSettings
from models.shared import SEP
from models.sync import ModelSync

KEY = b"test-key"
D = 4
T0 = 1_700_000_000.0


def bundle() -> SharedModels:
    return SharedModels(ModelBundle(ModelSettings(), bandit=LinUCB(D, prior=2.0)))


@pytest.fixture
def prefix(unique: Callable[[str], str]) -> str:
    return unique("sync")


async def sync_of(any_redis: Redis, prefix: str, key: bytes = KEY) -> ModelSync:
    sync = ModelSync(prefix, key)
    await sync.start(any_redis)
    return sync


def outcomes(n: int, seed: int) -> list[tuple[str, np.ndarray, float]]:
    rng = np.random.default_rng(seed)
    return [
        (f"offer-{rng.integers(3)}", rng.normal(size=D), float(rng.random() < 0.3))
        for _ in range(n)
    ]


def feedback(n: int, seed: int) -> list[tuple[str, int]]:
    rng = random.Random(seed)
    words = ["great", "love", "broken", "refund", "slow", "perfect", "awful", "fine", "late"]
    return [(" ".join(rng.choices(words, k=5)), rng.choice([1, 2, 4, 5])) for _ in range(n)]


def learn(models: SharedModels, part: list, texts: list) -> None:
    bandit = models.bundle.bandit
    assert bandit is not None
    for arm, x, reward in part:
        bandit.learn_one(arm, x, reward)
    for text, rating in texts:
        models.bundle.text.learn(text, rating)


async def test_additive_statistics_merge_exactly_through_redis(
    any_redis: Redis, prefix: str
) -> None:
    events, texts = outcomes(600, seed=1), feedback(300, seed=2)
    one = bundle()
    learn(one, events, texts)
    workers = [bundle() for _ in range(3)]
    syncs = [await sync_of(any_redis, prefix) for _ in workers]
    for models, sync in zip(workers, syncs, strict=True):
        await sync.sync(models)  # all start from the same (empty) deployment
    # each worker learns a third, merging in between, in an interleaved order
    for round_ in range(3):
        for w, (models, sync) in enumerate(zip(workers, syncs, strict=True)):
            lo = (round_ * 3 + w) * 600 // 9
            hi = (round_ * 3 + w + 1) * 600 // 9
            tlo, thi = lo // 2, hi // 2
            learn(models, events[lo:hi], texts[tlo:thi])
            await sync.sync(models)
    for models, sync in zip(workers, syncs, strict=True):
        await sync.sync(models)  # everyone adopts the last generation
    want = one.shared_state()
    for models in workers:
        got = models.shared_state()
        for name in want:
            if name.startswith(("bandit.", "text.")):
                np.testing.assert_allclose(got[name], want[name], rtol=1e-9, atol=1e-9)
        text = sorted(k for k in want if k.startswith("text."))
        assert sorted(k for k in got if k.startswith("text.")) == text
        for name in text:  # naive Bayes counts: exactly those of one model that saw all feedback
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)
        assert want["text.sentiment.counts"].any() and want["text.topics.counts"].any()
        bandit = models.bundle.bandit
        assert bandit is not None and bandit.n_learned == 600
        x = np.ones(D)
        arms = ["offer-0", "offer-1", "offer-2"]
        assert one.bundle.bandit is not None
        np.testing.assert_allclose(
            bandit.scores(arms, np.stack([x] * 3)),
            one.bundle.bandit.scores(arms, np.stack([x] * 3)),
        )
    assert {s.generation for s in syncs} == {syncs[0].generation}
    assert {m.bundle.version for m in workers} == {f"v{syncs[0].generation}+0"}


async def test_a_merge_keeps_what_the_other_worker_learned_in_between(
    any_redis: Redis, prefix: str
) -> None:
    a, b = bundle(), bundle()
    sa, sb = await sync_of(any_redis, prefix), await sync_of(any_redis, prefix)
    await sa.sync(a)
    await sb.sync(b)
    learn(a, outcomes(50, 3), [])
    learn(b, outcomes(70, 4), [])
    assert await sa.sync(a) == "published"
    assert await sb.sync(b) == "published", "b merges on top of a's generation"
    assert await sa.sync(a) == "adopted"
    for models in (a, b):
        bandit = models.bundle.bandit
        assert bandit is not None and bandit.n_learned == 120
    assert sa.generation == sb.generation == 3
    assert await sa.sync(a) == "idle" and await sb.sync(b) == "idle"


async def test_a_lost_race_is_merged_again_not_overwritten(any_redis: Redis, prefix: str) -> None:
    a, b = bundle(), bundle()
    sa, sb = await sync_of(any_redis, prefix), await sync_of(any_redis, prefix)
    await sa.sync(a)
    await sb.sync(b)
    learn(a, outcomes(30, 5), [])
    learn(b, outcomes(40, 6), [])
    # b publishes between a's read of the generation and a's publish
    real = sa.remote_generation

    async def stale() -> int:
        found = await real()
        await sb.sync(b)
        return found

    sa.remote_generation = stale  # type: ignore[method-assign]
    assert await sa.sync(a) == "published"
    assert sa.conflicts == 1
    bandit = a.bundle.bandit
    assert bandit is not None and bandit.n_learned == 70


async def test_a_starting_worker_serves_the_deployment_models_at_once(
    any_redis: Redis, prefix: str
) -> None:
    old = bundle()
    s_old = await sync_of(any_redis, prefix)
    await s_old.sync(old)
    learn(old, outcomes(200, 7), feedback(100, 8))
    for i in range(300):
        old.bundle.segments.assign({"spend_30d": 10.0 * i, "clicks_30d": i % 17})
    await s_old.sync(old)
    new = bundle()
    s_new = await sync_of(any_redis, prefix)
    assert await s_new.sync(new) == "adopted"
    assert new.bundle.version == old.bundle.version == f"v{s_old.generation}+0"
    probes = [{"spend_30d": 7.0 * i, "clicks_30d": i % 11} for i in range(50)]
    assert [new.bundle.segments.predict_one(p) for p in probes] == [
        old.bundle.segments.predict_one(p) for p in probes
    ]
    assert new.bundle.bandit is not None and new.bundle.bandit.n_learned == 200


async def test_learning_during_the_round_trips_is_kept_for_the_next_merge(
    any_redis: Redis, prefix: str
) -> None:
    a = bundle()
    sa = await sync_of(any_redis, prefix)
    await sa.sync(a)
    learn(a, outcomes(10, 9), [])
    real = sa.remote_generation

    async def learning_meanwhile() -> int:
        learn(a, outcomes(5, 10), [])  # the agent handled a batch during the await
        return await real()

    sa.remote_generation = learning_meanwhile  # type: ignore[method-assign]
    await sa.sync(a)
    sa.remote_generation = real  # type: ignore[method-assign]
    bandit = a.bundle.bandit
    assert bandit is not None and bandit.n_learned == 15
    await sa.sync(a)
    fresh = bundle()
    await (await sync_of(any_redis, prefix)).sync(fresh)
    assert fresh.bundle.bandit is not None and fresh.bundle.bandit.n_learned == 15


async def test_a_snapshot_signed_with_another_key_is_refused(any_redis: Redis, prefix: str) -> None:
    a = bundle()
    await (await sync_of(any_redis, prefix)).sync(a)
    learn(a, outcomes(5, 11), [])
    other = await sync_of(any_redis, prefix, key=b"another key")
    with pytest.raises(CheckpointError, match="bad signature"):
        await other.sync(bundle())


async def test_the_snapshot_is_stored_deflated_and_an_older_plain_one_still_loads(
    any_redis: Redis, prefix: str
) -> None:
    a = bundle()
    sa = await sync_of(any_redis, prefix)
    await sa.sync(a)
    learn(a, outcomes(50, 12), feedback(50, 13))
    await sa.sync(a)
    blob = await any_redis.get(sa.snapshot_key)
    assert blob is not None and blob.startswith(b"SSZLIB01")
    plain = zlib.decompress(blob[8:])
    # the hashed text tables are mostly zeros: a few MB pickled, a small fraction stored
    assert len(blob) < len(plain) / 10, (len(blob), len(plain))
    print(f"snapshot {len(plain)} bytes pickled, {len(blob)} stored")
    await any_redis.set(sa.snapshot_key, plain)  # as a worker before deflating wrote it
    fresh = bundle()
    assert await (await sync_of(any_redis, prefix)).sync(fresh) == "adopted"
    assert fresh.bundle.bandit is not None and fresh.bundle.bandit.n_learned == 50
    await any_redis.set(sa.snapshot_key, b"SSZLIB01" + b"not deflate")
    with pytest.raises(CheckpointError, match="not a readable snapshot"):
        await (await sync_of(any_redis, prefix)).sync(bundle())


def test_bandit_state_names_arms_and_restores_a_inverse() -> None:
    bandit = LinUCB(D, prior=2.0)
    for arm, x, r in outcomes(100, 12):
        bandit.learn_one(arm, x, r)
    state = bandit.shared_state()
    assert f"bandit.A{SEP}offer-1" in state
    copy = LinUCB(D, prior=2.0)
    copy.load_shared_state(state)
    X = np.random.default_rng(0).normal(size=(3, D))
    arms = ["offer-0", "offer-1", "offer-2"]
    np.testing.assert_allclose(copy.scores(arms, X), bandit.scores(arms, X), rtol=1e-9)
