"""A fresh deployment is not open by default."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


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
