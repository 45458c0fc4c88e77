"""A fresh deployment is not open by default."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.streams.conftest import produce
from tests.streams.test_pipeline_e2e import _routed, click


@pytest.mark.timeout(60)
def test_a_worker_refuses_the_built_in_checkpoint_key(stack_env: dict[str, str]) -> None:
    env = {k: v for k, v in {**os.environ, **stack_env}.items()}
    env.pop("STREAMSCORE_MODELS__CHECKPOINT_KEY")
    proc = subprocess.run(
        [sys.executable, "-m", "streams.cli", "worker"],
        env=env,
        capture_output=True,
        timeout=45,
    )
    assert proc.returncode != 0
    assert b"STREAMSCORE_MODELS__CHECKPOINT_KEY" in proc.stderr, proc.stderr[-2000:]


def test_docker_compose_ships_no_fallback_secret() -> None:
    compose = (Path(__file__).parents[2] / "docker-compose.yml").read_text()
    line = next(x for x in compose.splitlines() if "CHECKPOINT_KEY" in x)
    assert ":?" in line and ":-" not in line, line


@pytest.mark.timeout(120)
def test_quiet_hours_hold_on_the_wall_clock_for_a_backlog(worker_factory: Any) -> None:
    """Clicks from the afternoon read during the night: no offers (they used to be judged by
    the clicks' own time, so a backlog or a device with a wrong clock got offers at night)."""
    now = time.time()
    hour = time.gmtime(now).tm_hour
    w = worker_factory(
        STREAMSCORE_DECISION__QUIET_HOURS_START=str(hour),
        STREAMSCORE_DECISION__QUIET_HOURS_END=str((hour + 2) % 24),
        STREAMSCORE_DECISION__TIMEZONE="UTC",
        STREAMSCORE_DECISION__CONTROL_PERCENT="0",
    )
    w.wait_ready()
    env = w.env
    then = now - 12 * 3600  # outside the quiet hours, by the events' own time
    records = [
        click(f"q{i}", f"night-{i}", then + i, "add_to_cart", "toys", 30.0) for i in range(20)
    ]
    asyncio.run(produce(env["STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS"], _routed(env, records)))
    stats = w.wait_processed(len(records))
    blocked = stats["contact_policy"].get("blocked:quiet_hours", 0)
    assert blocked == len(records) and stats["offers"] == 0, stats


@pytest.mark.timeout(60)
def test_a_misspelled_setting_is_named_in_the_log(stack_env: dict[str, str]) -> None:
    env = {**os.environ, **stack_env, "STREAMSCORE_KAFKA_BOOTSTRAP_SERVERS": "elsewhere:9092"}
    env.pop("STREAMSCORE_MODELS__CHECKPOINT_KEY")  # so the worker stops right after the check
    proc = subprocess.run(
        [sys.executable, "-m", "streams.cli", "worker"], env=env, capture_output=True, timeout=45
    )
    log = (proc.stdout + proc.stderr).decode(errors="replace")
    want = (
        "STREAMSCORE_KAFKA_BOOTSTRAP_SERVERS (did you mean STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS?)"
    )
    assert want in log, log[-3000:]
