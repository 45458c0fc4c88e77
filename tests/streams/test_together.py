"""The batch's overlapped round trips: a failure cancels the others (no leftover step)."""

from __future__ import annotations

import asyncio

import pytest

from streams.agents import _together


async def test_results_in_order() -> None:
    async def value(v: int, delay: float) -> int:
        await asyncio.sleep(delay)
        return v

    assert await _together(value(1, 0.02), value(2, 0.0)) == [1, 2]


async def test_a_failure_cancels_the_other_steps() -> None:
    finished: list[str] = []

    async def slow() -> None:
        await asyncio.sleep(5)
        finished.append("slow")

    async def fail() -> None:
        await asyncio.sleep(0.01)
        raise RuntimeError("redis down")

    with pytest.raises(RuntimeError, match="redis down"):
        await asyncio.wait_for(_together(slow(), fail()), timeout=2)
    await asyncio.sleep(0.05)
    assert finished == []
