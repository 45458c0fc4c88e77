"""SessionEnds against a real Valkey: sessions end by idle time per partition, once."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from redis.asyncio import Redis

from models.intent.sessions import SessionEnds

T0 = 1_700_000_000.0


@pytest.fixture
async def ends(any_redis: Redis, unique: Callable[[str], str]) -> SessionEnds:
    store = SessionEnds(unique("se"), idle_s=1_800.0)
    await store.start(any_redis)
    return store


async def test_a_session_ends_when_idle_by_its_partitions_time_and_only_once(
    ends: SessionEnds,
) -> None:
    await ends.note([(0, "c1", "s1", T0), (0, "c1", "s1", T0 + 600), (1, "c2", "s2", T0)], [])
    await ends.note([(0, "c1", "s1", T0 + 300)], [])  # a late step does not shorten it
    assert await ends.take(0, T0 + 2_399) == []
    assert await ends.take(0, T0 + 2_400) == [("c1", "s1")]
    assert await ends.take(0, T0 + 9_999) == [], "taken once"
    assert await ends.take(1, T0 + 1_800) == [("c2", "s2")], "each partition its own"


async def test_a_purchase_ends_a_session_before_its_timeout(ends: SessionEnds) -> None:
    await ends.note([(0, "c1", "s1", T0)], [])
    await ends.note([], [(0, "c1", "s1")])
    assert await ends.take(0, T0 + 9_999) == []
