"""A zero batch wait is refused at start: Faust's ``take_events`` reads ``within=0`` as no
time limit, so such a worker waited for 500 events before it answered anything (a latency
benchmark with ``STREAMSCORE_WORKER__BATCH_WAIT_MS=0`` got no output in 90 s)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from pydantic import ValidationError

from streams.settings import WorkerSettings


def test_the_worker_refuses_a_zero_batch_wait_with_a_clear_error() -> None:
    env = {**os.environ, "STREAMSCORE_WORKER__BATCH_WAIT_MS": "0"}
    done = subprocess.run(
        [sys.executable, "-m", "streams.cli", "worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "batch_wait_ms" in done.stderr and "greater than 0" in done.stderr, done.stderr[-2000:]


def test_any_positive_wait_is_taken() -> None:
    assert WorkerSettings(batch_wait_ms=0.5).batch_wait_ms == 0.5
    with pytest.raises(ValidationError):
        WorkerSettings(batch_wait_ms=0)
