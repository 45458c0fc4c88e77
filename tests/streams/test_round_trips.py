"""The fixed cost of a batch: the Redis round trips one event takes, against a real Valkey.

The stores' calls of one phase of ``Pipeline.handle`` go out together (one write, one reply:
``features.commands.coalesce``); a one-click batch used to write six times."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio.connection import Connection

from features.settings import RedisSettings
from models.settings import DecisionSettings, ModelSettings
from streams.agents import Pipeline
from streams.settings import Settings
from tests.streams.conftest import started_pipeline
from tests.streams.test_pipeline_e2e import T0, click


@pytest.fixture
async def pipeline(redis_url: str, unique: Any, tmp_path: Path) -> AsyncIterator[Pipeline]:
    settings = Settings(
        redis=RedisSettings(url=redis_url, key_prefix=unique("trips")),
        decision=DecisionSettings(frequency_cap_minutes=0),
        models=ModelSettings(sync_every_s=0, checkpoint_dir=tmp_path),
    )
    async with started_pipeline(settings) as p:
        yield p


async def test_a_one_click_batch_takes_three_round_trips(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[int] = []
    real = Connection.send_packed_command

    async def counted(self: Connection, command: Any, check_health: bool = True) -> None:
        writes.append(1)
        await real(self, command, check_health)

    monkeypatch.setattr(Connection, "send_packed_command", counted)
    per_batch = []
    for i in range(40):
        _, key, value = click(f"e{i}", f"c{i % 3}", T0 + i, "add_to_cart", "toys", 20.0)
        writes.clear()
        out = await pipeline.handle([("clicks", 0, i, key, value, None)])
        assert out.n_valid == 1
        per_batch.append(len(writes))
    # phase 1 (features, contact states, recent items), phase 2 (claims, co-occurrence,
    # labels, carts, churn, ...), then the offer's outcome window when one was published
    assert max(per_batch[5:]) <= 4 and sorted(per_batch[5:])[len(per_batch[5:]) // 2] <= 3, (
        per_batch
    )
