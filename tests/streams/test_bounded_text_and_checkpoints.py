"""Secure by default, issue 12: hostile text cannot grow a worker's memory, and a checkpoint
does not stop the worker while it is written.

Both run a real worker on the embedded broker and Valkey. The slow disk of the second test is
a ``sitecustomize`` in the worker's ``PYTHONPATH`` that holds ``os.fsync`` of checkpoint files
while a gate file exists (a disk that stalls, as a full or networked one does).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import string
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest

from models.bundle import ModelBundle
from models.settings import ModelSettings
from tests.streams.conftest import produce
from tests.streams.test_pipeline_e2e import _routed, click, feedback

_MIB = 1 << 20
_BUCKETS = 1 << 16


def _random_feedback(n: int, start: int, rng: random.Random) -> list[tuple[str, bytes, bytes]]:
    """``n`` rated feedbacks of ~450 random words (near the 4,096-character limit), from 20
    customers; one in ten names a delivery seed word, so the topic model learns too."""
    now = time.time() - 60.0
    out = []
    for i in range(start, start + n):
        words = [
            "".join(rng.choices(string.ascii_lowercase, k=rng.randint(5, 8))) for _ in range(450)
        ]
        if i % 10 == 0:
            words.append("parcel")
        text = " ".join(words)[:4000]
        out.append(feedback(f"flood-{i}", f"f{i % 20}", now + i * 1e-3, rng.choice((1, 5)), text))
    return out


def _rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


def _newest_checkpoint(directory: Path) -> Path:
    return max(directory.glob("models-*.ckpt"), key=lambda p: p.name)


def _metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return float(next(x.split()[-1] for x in text.splitlines() if x.startswith(name + " ")))


def _send(env: dict[str, str], records: list[tuple[str, bytes, bytes]]) -> None:
    asyncio.run(produce(env["STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS"], _routed(env, records)))


def _wait_for(what: str, check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.1)
    raise TimeoutError(f"{what} after {timeout} s")


@pytest.mark.timeout(90)
def test_a_flood_of_random_feedback_text_leaves_memory_and_checkpoints_flat(
    worker_factory: Any, tmp_path: Path
) -> None:
    """1,000 then 3,000 more feedbacks of random words (1.35 million new words): the worker's
    RSS, its checkpoint file and its shared snapshot stay at the size of the hashed count
    tables. (Before, every word was a new row of both naive Bayes models: the checkpoint grew
    with the flood and RSS by hundreds of MB.)"""
    w = worker_factory(
        STREAMSCORE_INTENT__ENABLED="false",
        STREAMSCORE_MODELS__CHECKPOINT_EVERY_S="2",
        STREAMSCORE_MODELS__SYNC_EVERY_S="2",
        STREAMSCORE_TEXT__VOCABULARY_BUCKETS=str(_BUCKETS),
    )
    w.wait_ready()
    assert w.proc is not None
    rng = random.Random(12)
    _send(w.env, _random_feedback(1_000, 0, rng))
    w.wait_processed(1_000, timeout=40)
    first = _rss(w.proc.pid)
    _send(w.env, _random_feedback(3_000, 1_000, rng))
    stats = w.wait_processed(4_000, timeout=40)
    grown = _rss(w.proc.pid) - first
    assert stats["feedback_learned"] == 4_000, stats
    tables = 8 * _BUCKETS * (2 + 5)  # int64 counts, sentiment and topic classes
    checkpoints = Path(w.env["STREAMSCORE_MODELS__CHECKPOINT_DIR"])
    stats = _wait_for(
        "a snapshot and a checkpoint of all 4,000",
        lambda: (s := w.stats()) and s["model_syncs_published"] > 1 and s,
        timeout=15,
    )
    ckpt = _newest_checkpoint(checkpoints)
    print(
        f"RSS {first / _MIB:.1f} MiB after 1,000, +{grown / _MIB:.1f} MiB after 4,000; "
        f"checkpoint {ckpt.stat().st_size} B, snapshot {stats['model_snapshot_bytes']} B"
    )
    assert ckpt.stat().st_size < tables + _MIB, ckpt.stat().st_size
    assert 0 < _metric(w.web_port, "streamscore_checkpoint_bytes") < tables + _MIB
    assert stats["model_snapshot_bytes"] < tables + _MIB, stats
    assert grown < 40 * _MIB, f"RSS grew {grown / _MIB:.1f} MiB with 3,000 more random texts"


_SLOW_DISK = """
import os, time

_gate = os.environ["STREAMSCORE_TEST_FSYNC_GATE"]
_fsync = os.fsync


def _stalled(fd):
    try:
        name = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        name = ""
    if "models-" in name and os.path.exists(_gate):
        open(_gate + ".held", "w").close()
        deadline = time.monotonic() + 45.0
        while os.path.exists(_gate) and time.monotonic() < deadline:
            time.sleep(0.05)
    return _fsync(fd)


os.fsync = _stalled
"""


@pytest.mark.timeout(120)
def test_a_checkpoint_on_a_stalled_disk_does_not_stop_scoring(
    worker_factory: Any, tmp_path: Path
) -> None:
    """While a checkpoint waits on the disk the worker keeps scoring and learning (before, it
    was written in the event loop: nothing was processed and ``/stats`` did not answer until
    the disk came back). Once the disk is back the checkpoint lands, and the one written on
    shutdown holds every feedback learned."""
    hook = tmp_path / "slow-disk"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(_SLOW_DISK)
    gate = tmp_path / "disk-stalled"
    w = worker_factory(
        PYTHONPATH=os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")])),
        STREAMSCORE_TEST_FSYNC_GATE=str(gate),
        STREAMSCORE_INTENT__ENABLED="false",
        STREAMSCORE_MODELS__CHECKPOINT_EVERY_S="1",
        STREAMSCORE_MODELS__SYNC_EVERY_S="0",
    )
    w.wait_ready()
    now = time.time() - 60.0
    rated = [
        feedback(
            f"fb{i}", f"c{i % 7}", now + i, 5 if i % 2 else 1, "great fast" if i % 2 else "awful"
        )
        for i in range(20)
    ]
    _send(w.env, rated)
    w.wait_processed(20)
    gate.touch()  # the disk stalls: the next checkpoint waits in fsync
    _wait_for("a checkpoint held by the disk", (tmp_path / "disk-stalled.held").exists, 20)
    more = [
        *[
            click(f"k{i}", f"c{i % 7}", now + 100 + i, "add_to_cart", "toys", 30.0)
            for i in range(30)
        ],
        *[feedback(f"fb{i}", f"c{i % 7}", now + 200 + i, 4, "love it") for i in range(20, 60)],
    ]
    _send(w.env, more)
    stats = w.wait_processed(90, timeout=20)  # scored while the checkpoint is on the disk
    assert stats["feedback_learned"] == 60, stats
    assert gate.exists(), "the disk was stalled all along"
    gate.unlink()
    w.stop(signal.SIGTERM)
    assert w.proc is not None and w.proc.returncode == 0, w.log()
    key = w.env["STREAMSCORE_MODELS__CHECKPOINT_KEY"]
    settings = ModelSettings(checkpoint_key=key)  # type: ignore[arg-type]
    checkpoints = Path(w.env["STREAMSCORE_MODELS__CHECKPOINT_DIR"])
    last = ModelBundle.load_or_new(checkpoints, settings)
    assert last.text.sentiment.n_learned == 60, w.log()
