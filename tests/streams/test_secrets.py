"""No secrets in logs or outputs: a worker with a Redis password, a SASL password (unused on
PLAINTEXT) and a checkpoint key, at DEBUG log level, scores valid and malformed input; its log,
its /stats page, every output record and the checkpoint files are searched for the secrets.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from streams.embedded import EmbeddedValkey
from tests.streams.faultkit import produce_all, read_outputs, record, simulate, wait_drained

pytestmark = pytest.mark.slow

REDIS_PASSWORD = "rEd1s-S3cret-9f2c"
CHECKPOINT_KEY = "ckpt-K3y-71d0a4"
SASL_PASSWORD = "sAsl-P4ss-c0ffee"


@pytest.mark.timeout(150)
def test_no_secret_reaches_logs_stats_outputs_or_checkpoints(
    worker_factory: Any, tmp_path: Path
) -> None:
    with EmbeddedValkey(password=REDIS_PASSWORD) as valkey:
        w = worker_factory(
            STREAMSCORE_REDIS__URL=valkey.url,
            STREAMSCORE_REDIS__PASSWORD=REDIS_PASSWORD,
            STREAMSCORE_MODELS__CHECKPOINT_KEY=CHECKPOINT_KEY,
            STREAMSCORE_KAFKA__SASL_PASSWORD=SASL_PASSWORD,
            STREAMSCORE_WORKER__LOG_LEVEL="DEBUG",
        )
        env = w.env
        records, _ = simulate(env, 1_500, seed=59)
        records.append((env["STREAMSCORE_TOPICS__CLICKS"], b"bad", b"{broken"))
        w.wait_ready()
        stats_page = str(w.stats())
        ends = asyncio.run(produce_all(env["STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS"], records))
        wait_drained(env, ends, timeout=60)
        out = read_outputs(env, quiet_s=2.0)
        w.stop(signal.SIGTERM)  # a clean stop writes a checkpoint
        log = w.log_path.read_text(errors="replace")
    blobs = {"log": log, "stats": stats_page, "outputs": repr((out.offers, out.alerts, out.dead))}
    ckpt_dir = Path(env["STREAMSCORE_MODELS__CHECKPOINT_DIR"])
    checkpoints = [p for p in ckpt_dir.rglob("*") if p.is_file()] if ckpt_dir.exists() else []
    for p in checkpoints:
        blobs[f"checkpoint {p.name}"] = p.read_bytes().decode("latin-1")
    secrets = {"redis": REDIS_PASSWORD, "checkpoint key": CHECKPOINT_KEY, "sasl": SASL_PASSWORD}
    leaks = [f"{s} in {b}" for s, v in secrets.items() for b, text in blobs.items() if v in text]
    numbers = {
        "log_bytes": len(log),
        "outputs": len(out.offers) + len(out.alerts) + len(out.dead),
        "checkpoints": len(checkpoints),
        "leaks": len(leaks),
    }
    record(tmp_path, "secrets", numbers)
    assert len(log) > 1000 and out.dead and checkpoints, f"too little to search: {numbers}"
    assert not leaks, f"secrets leaked: {leaks}; {numbers}"
    assert os.environ.get("STREAMSCORE_REDIS__PASSWORD") != REDIS_PASSWORD
