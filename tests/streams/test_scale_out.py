"""Two worker processes in one consumer group share the partitions; one stops, none is lost.

Simulated traffic (with some malformed records) goes to 4-partition input topics. Both
workers get partitions and process events; then one is stopped with SIGTERM while events are
still being produced, the other takes over every input partition, and the features in Redis
equal the ground truth computed from the input: each valid event applied exactly once.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest

from features.settings import RedisSettings
from features.store import FeatureStore
from streams.simulator import SimEvent, Simulator
from tests.streams.conftest import WorkerProcess, produce

PARTITIONS = 4
N_EVENTS = 2_000


def _input_partitions(w: WorkerProcess) -> int:
    """Input partitions the worker holds, from ``/ready`` (200 or 503, same body)."""
    url = f"http://127.0.0.1:{w.web_port}/ready"
    try:
        with urllib.request.urlopen(url, timeout=2.0) as r:
            body = r.read()
    except urllib.error.HTTPError as exc:
        body = exc.read()
    except OSError:
        return 0
    return int(orjson.loads(body)["checks"]["partitions"])


def _wait(what: str, check: Any, timeout: float, *workers: WorkerProcess) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            logs = "\n".join(w.log() for w in workers)
            raise AssertionError(f"{what} not within {timeout}s:\n{logs}")
        time.sleep(0.2)


def _truth(events: list[SimEvent]) -> dict[str, tuple[float, float, float]]:
    """Per customer: (clicks_30d, purchases_30d, spend_30d) from the valid input events."""
    truth: dict[str, list[float]] = {}
    for e in events:
        if e.doc is None:  # malformed: a dead letter, not a feature
            continue
        t = truth.setdefault(e.doc["customer_id"], [0.0, 0.0, 0.0])
        if e.topic == "clicks":
            t[0] += 1
        elif e.topic == "purchases":
            t[1] += 1
            t[2] += e.doc["total"]
    return {cid: (c, p, round(s, 6)) for cid, (c, p, s) in truth.items()}


async def _features(
    env: dict[str, str], customers: list[str], now: float
) -> dict[str, tuple[float, float, float]]:
    store = FeatureStore(
        RedisSettings(
            url=env["STREAMSCORE_REDIS__URL"], key_prefix=env["STREAMSCORE_REDIS__KEY_PREFIX"]
        )
    )
    await store.start()
    try:
        got = {}
        for cid in customers:
            r = await store.get(cid, now)
            if r is not None:
                f = r.features
                got[cid] = (f["clicks_30d"], f["purchases_30d"], round(f["spend_30d"], 6))
        return got
    finally:
        await store.close()


@pytest.mark.timeout(150)
def test_two_workers_share_partitions_and_failover_loses_nothing(
    worker_factory: Any, tmp_path: Path
) -> None:
    def start(name: str) -> WorkerProcess:
        # one consumer group (same app id and topics); own checkpoint and data dirs
        return worker_factory(
            STREAMSCORE_TOPICS__PARTITIONS=str(PARTITIONS),
            STREAMSCORE_MODELS__CHECKPOINT_DIR=str(tmp_path / f"checkpoints-{name}"),
            STREAMSCORE_WORKER__DATA_DIR=str(tmp_path / f"faust-{name}"),
        )

    a = start("a")
    a.wait_ready()
    b = start("b")
    b.wait_ready()
    n_inputs = 3 * PARTITIONS
    _wait(
        "both workers holding input partitions",
        lambda: (
            _input_partitions(a) > 0
            and _input_partitions(a) + _input_partitions(b) == n_inputs
            and _input_partitions(b) > 0
        ),
        30,
        a,
        b,
    )

    env = a.env
    topic = {
        "clicks": env["STREAMSCORE_TOPICS__CLICKS"],
        "purchases": env["STREAMSCORE_TOPICS__PURCHASES"],
        "feedback": env["STREAMSCORE_TOPICS__FEEDBACK"],
    }
    sim = Simulator(300, seed=11, start_ts=time.time() - 3600, malformed_rate=0.02)
    events = list(sim.events(N_EVENTS, rate=100))
    records = [(topic[e.topic], e.key, e.value) for e in events]
    bootstrap = env["STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS"]

    half = N_EVENTS // 2
    asyncio.run(produce(bootstrap, records[:half]))

    def both_working() -> bool:
        sa, sb = a.stats() or {}, b.stats() or {}
        return sa.get("records", 0) > 0 and sb.get("records", 0) > 0

    _wait("both workers processing events", both_working, 30, a, b)

    # The rest is produced in chunks while worker a is stopped (SIGTERM: it commits and
    # leaves the group); b gets a's partitions and continues from a's committed offsets.
    def produce_rest() -> None:
        for i in range(half, N_EVENTS, 100):
            asyncio.run(produce(bootstrap, records[i : i + 100]))
            time.sleep(0.05)

    producer = threading.Thread(target=produce_rest, daemon=True)
    producer.start()
    time.sleep(0.3)
    a.stop(signal.SIGTERM)
    assert a.proc is not None and a.proc.returncode == 0, a.log()
    producer.join(timeout=60)
    assert not producer.is_alive(), "the producer thread did not finish"

    _wait("b holding every input partition", lambda: _input_partitions(b) == n_inputs, 30, b)
    truth = _truth(events)
    now = max(e.doc["ts"] for e in events if e.doc is not None) + 1.0
    got: dict[str, tuple[float, float, float]] = {}

    def features_match() -> bool:
        nonlocal got
        got = asyncio.run(_features(env, sorted(truth), now))
        return got == truth

    try:
        _wait("features equal to the ground truth", features_match, 45, b)
    except AssertionError:
        wrong = {c: (got.get(c), t) for c, t in truth.items() if got.get(c) != t}
        raise AssertionError(f"{len(wrong)} customers differ (got, truth): {wrong}") from None
    stats = b.stats() or {}
    assert stats.get("records", 0) > 0
