"""Redis faults: a crash-restart mid-stream and an outage of several seconds.

Each test runs its own Valkey (append-only file, ``appendfsync always``) on a fixed port, so
it can be killed and started again without disturbing the session's shared servers.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from streams.embedded import EmbeddedValkey
from tests.streams.faultkit import (
    applied_ids,
    committed_and_end,
    compare_features,
    input_index,
    inputs_of,
    produce_all,
    read_features,
    record,
    simulate,
    wait_drained,
    wait_until,
)

pytestmark = pytest.mark.slow


def _crash(valkey: EmbeddedValkey) -> None:
    """SIGKILL the Valkey process (no shutdown save: only the AOF survives)."""
    server = valkey._server
    if server is not None and server._process is not None:
        server._process.kill()
        server._process.wait()
    valkey.stop()


@pytest.fixture
def valkey(tmp_path: Path) -> Any:
    v = EmbeddedValkey(data_dir=tmp_path / "valkey", appendonly=True)
    (tmp_path / "valkey").mkdir()
    v.start()
    yield v
    v.stop()


def _records(w: Any) -> int:
    return int((w.stats() or {}).get("records", 0))


@pytest.mark.timeout(200)
def test_redis_crash_restart_mid_stream_loses_nothing(
    worker_factory: Any, valkey: EmbeddedValkey, tmp_path: Path
) -> None:
    n = 6_000
    w = worker_factory(STREAMSCORE_REDIS__URL=valkey.url)
    env = w.env
    records, truth = simulate(env, n, seed=31)
    w.wait_ready()
    ends = asyncio.run(produce_all(env["STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS"], records))
    w.wait_processed(n // 4, timeout=90)
    restarts = []
    for down_s in (1.0, 3.0):  # two crashes: one short, one past the store's own retries
        before = _records(w)
        _crash(valkey)
        t_down = time.monotonic()
        time.sleep(down_s)
        valkey.start()
        t_up = time.monotonic()
        resumed = wait_until(lambda b=before: _records(w) > b, 60, "processing after restart")
        restarts.append({"down_s": round(t_up - t_down, 1), "resume_after_up_s": round(resumed, 1)})
        assert w.proc is not None and w.proc.poll() is None, f"worker died:\n{w.log()}"
        if _records(w) >= n:
            break
    drain_s = wait_drained(env, ends, timeout=120)
    assert w.proc is not None and w.proc.poll() is None, f"worker died:\n{w.log()}"
    stats = w.stats() or {}
    got = asyncio.run(read_features(env, sorted(truth.features)))
    cmp = compare_features(truth, got)
    numbers: dict[str, Any] = {
        "events_sent": n,
        "records_handled": stats.get("records"),
        "duplicates_ignored": stats.get("duplicates"),
        "lost": cmp.lost,
        "double_counted": cmp.doubled,
        "customers_wrong": cmp.customers_wrong,
        "restarts": restarts,
        "drain_wait_s": round(drain_s, 1),
        "worker_alive": w.proc.poll() is None,
    }
    record(tmp_path, "redis_restart", numbers)
    assert cmp.lost == 0 and cmp.doubled == 0 and cmp.customers_wrong == 0, (
        f"features differ from the ground truth: {cmp.summary()}; {cmp.example}; {numbers}"
    )
    log = w.log_path.read_text()
    assert "Redis apply failed" in log or "retry" in log, f"the outage went unnoticed: {numbers}"


@pytest.mark.timeout(200)
def test_redis_outage_pauses_consumption_holds_commits_and_resumes(
    worker_factory: Any, valkey: EmbeddedValkey, tmp_path: Path
) -> None:
    n = 6_000
    w = worker_factory(STREAMSCORE_REDIS__URL=valkey.url)
    env = w.env
    bootstrap = env["STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS"]
    group = env["STREAMSCORE_WORKER__APP_ID"]
    records, truth = simulate(env, n, seed=37)
    w.wait_ready()
    ends = asyncio.run(produce_all(bootstrap, records))
    w.wait_processed(n // 4, timeout=90)
    assert w.proc is not None
    proc = psutil.Process(w.proc.pid)

    valkey.stop()
    t_down = time.monotonic()
    time.sleep(3.0)  # longer than the 1 s commit interval: what was acked is committed now
    c1, _ = asyncio.run(committed_and_end(bootstrap, group, inputs_of(env)))
    r1, rss1 = _records(w), proc.memory_info().rss
    time.sleep(6.0)
    c2, _ = asyncio.run(committed_and_end(bootstrap, group, inputs_of(env)))
    r2, rss2 = _records(w), proc.memory_info().rss
    assert w.proc.poll() is None, f"worker died during the outage:\n{w.log()}"

    # What Redis held when it went down: a copy of its AOF in a second, private server.
    snap_dir = tmp_path / "snapshot"
    shutil.copytree(valkey.data_dir, snap_dir)
    with EmbeddedValkey(data_dir=snap_dir, appendonly=True) as snap:
        prefix = env["STREAMSCORE_REDIS__KEY_PREFIX"]
        applied = applied_ids(snap.url, prefix, sorted(truth.features))
    index = asyncio.run(input_index(env))
    committed_not_applied = [
        (t, p, o, eid)
        for (t, p, o), eid in index.items()
        if o < c1[next(tp for tp in c1 if (tp.topic, tp.partition) == (t, p))]
        and eid not in applied
    ]

    valkey.start()
    outage_s = time.monotonic() - t_down
    resume_s = wait_until(lambda: _records(w) > r2, 60, "processing after Redis came back")
    drain_s = wait_drained(env, ends, timeout=120)
    got = asyncio.run(read_features(env, sorted(truth.features)))
    cmp = compare_features(truth, got)
    numbers: dict[str, Any] = {
        "events_sent": n,
        "committed_at_outage": sum(max(0, c) for c in c1.values()),
        "log_end": sum(ends.values()),
        "commits_during_outage": sum(c2[tp] - c1[tp] for tp in c1),
        "records_during_outage": r2 - r1,
        "committed_not_applied": len(committed_not_applied),
        "rss_mb_outage": [round(rss1 / 2**20), round(rss2 / 2**20)],
        "outage_s": round(outage_s, 1),
        "resume_after_up_s": round(resume_s, 1),
        "drain_wait_s": round(drain_s, 1),
        "lost": cmp.lost,
        "double_counted": cmp.doubled,
    }
    record(tmp_path, "redis_outage", numbers)
    assert c2 == c1, f"offsets committed while Redis was down: {numbers}"
    assert r2 == r1, f"records handled while Redis was down: {numbers}"
    assert not committed_not_applied, (
        f"committed past what was applied: {committed_not_applied[:5]}; {numbers}"
    )
    assert sum(max(0, c) for c in c1.values()) < sum(ends.values()), (
        f"the outage came too late to test anything: {numbers}"
    )
    assert rss2 < rss1 + 64 * 2**20, f"worker memory grew during the outage: {numbers}"
    assert cmp.lost == 0 and cmp.doubled == 0, (
        f"features differ from the ground truth: {cmp.summary()}; {cmp.example}; {numbers}"
    )
