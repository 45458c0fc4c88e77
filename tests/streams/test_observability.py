"""/metrics, /health, /ready and JSON logs of a real worker process.

The worker runs on the embedded broker; the readiness test gives it a private Valkey that is
stopped mid-test (503, Redis retries counted) and started again (200, the held event applied).
"""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streams.embedded import EmbeddedValkey
from tests.streams.conftest import WorkerProcess, produce


def _get(w: WorkerProcess, path: str) -> tuple[int, bytes]:
    url = f"http://127.0.0.1:{w.web_port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=3.0) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _metrics(w: WorkerProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Samples by (sample name, sorted labels), parsed with prometheus_client's parser."""
    status, body = _get(w, "/metrics")
    assert status == 200, body
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def _total(samples: dict[Any, float], name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def _wait_status(w: WorkerProcess, path: str, status: int, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    got: tuple[int, bytes] = (0, b"")
    while time.monotonic() < deadline:
        got = _get(w, path)
        if got[0] == status:
            return orjson.loads(got[1])
        time.sleep(0.2)
    raise AssertionError(f"{path} answered {got} not {status} within {timeout}s:\n{w.log()}")


def _click(env: dict[str, str], eid: str, cid: str, ts: float, action: str = "view") -> Any:
    doc = {
        "event_id": eid,
        "customer_id": cid,
        "session_id": "s1",
        "ts": ts,
        "action": action,
        "item_id": "i1",
        "category": "sports",
        "price": 50.0,
    }
    return (env["STREAMSCORE_TOPICS__CLICKS"], cid.encode(), orjson.dumps(doc))


def _feedback(env: dict[str, str], eid: str, cid: str, ts: float) -> Any:
    doc = {"event_id": eid, "customer_id": cid, "ts": ts, "channel": "review", "rating": 1}
    return (env["STREAMSCORE_TOPICS__FEEDBACK"], cid.encode(), orjson.dumps(doc))


@pytest.mark.timeout(90)
def test_metrics_health_and_json_logs(worker_factory: Any) -> None:
    w = worker_factory(STREAMSCORE_WORKER__LOG_JSON="true")
    w.wait_ready()
    env = w.env
    now = time.time()
    valid = [_click(env, f"e{i}", f"c{i % 3}", now - 5 + i * 0.1) for i in range(9)]
    valid.append(_feedback(env, "f1", "c0", now))
    bad = [
        (env["STREAMSCORE_TOPICS__CLICKS"], b"c9", b"{not json"),
        _click(env, "bad-1", "c9", now, action="teleport"),
    ]
    records = [*valid, *bad, valid[0]]  # the last one is a replay
    asyncio.run(produce(env["STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS"], records))
    stats = w.wait_processed(len(records))

    assert _get(w, "/health")[0] == 200
    ready = _wait_status(w, "/ready", 200, timeout=5)
    input_partitions = 3 * int(env["STREAMSCORE_TOPICS__PARTITIONS"])  # 3 input topics
    assert ready["checks"] == {"pipeline": True, "redis": True, "partitions": input_partitions}

    m = _metrics(w)
    events = "streamscore_events_total"
    assert _total(m, events, topic="clicks", outcome="applied") == 9
    assert _total(m, events, topic="feedback", outcome="applied") == 1
    assert _total(m, events, topic="clicks", outcome="duplicate") == 1
    assert _total(m, events, topic="clicks", outcome="dead") == 2
    dead = "streamscore_dead_letters_total"
    assert _total(m, dead, reason="invalid_json") == 1
    assert _total(m, dead, reason="unknown_value") == 1
    assert _total(m, "streamscore_offers_total") == stats["offers"] >= 1
    assert _total(m, "streamscore_alerts_total", type="negative_feedback") == 1
    # every record has a Kafka timestamp; the valid, live events also an event-clock latency
    assert _total(m, "streamscore_event_latency_seconds_count", clock="record") == len(records)
    assert _total(m, "streamscore_event_latency_seconds_count", clock="event") == 11
    for stage in ("validate", "models", "redis", "decide", "produce"):
        assert _total(m, "streamscore_stage_seconds_count", stage=stage) >= 1, stage
        per_event = _total(m, "streamscore_stage_event_seconds_count", stage=stage)
        assert per_event >= _total(m, "streamscore_stage_seconds_count", stage=stage)
    assert _total(m, "streamscore_batch_size_sum") == len(records)
    assert _total(m, "streamscore_assigned_partitions") == input_partitions
    lags = [k for k in m if k[0] == "streamscore_consumer_lag"]
    assert lags and all(m[k] >= 0 for k in lags)
    assert _total(m, "streamscore_model_info") == 1
    assert "streamscore_model_auc" in {k[0] for k in m}

    # the dead letter with an id is logged as JSON with the id and where the record was
    lines = [orjson.loads(line) for line in w.log().splitlines() if line.startswith("{")]
    logged = [d for d in lines if d.get("event_id") == "bad-1"]
    assert logged, w.log()
    assert logged[0]["level"] == "WARNING" and "unknown action" in logged[0]["msg"]
    assert logged[0]["topic"] == env["STREAMSCORE_TOPICS__CLICKS"]
    assert isinstance(logged[0]["partition"], int) and isinstance(logged[0]["offset"], int)


@pytest.mark.timeout(90)
def test_ready_is_503_while_redis_is_down(worker_factory: Any) -> None:
    valkey = EmbeddedValkey().start()
    try:
        w = worker_factory(
            STREAMSCORE_REDIS__URL=valkey.url,
            STREAMSCORE_REDIS__RETRY_ATTEMPTS="2",
            STREAMSCORE_REDIS__SOCKET_TIMEOUT_S="1",
        )
        w.wait_ready()
        assert _wait_status(w, "/ready", 200, timeout=5)["ready"] is True

        valkey.stop()
        body = _wait_status(w, "/ready", 503, timeout=10)
        assert body["ready"] is False and body["checks"]["redis"] is False
        assert _get(w, "/health")[0] == 200, "alive while Redis is down"
        env = w.env
        held = [_click(env, "e1", "c1", time.time())]
        asyncio.run(produce(env["STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS"], held))
        deadline = time.monotonic() + 15
        while _total(_metrics(w), "streamscore_redis_retries_total") == 0:
            assert time.monotonic() < deadline, f"no Redis retry counted:\n{w.log()}"
            time.sleep(0.3)

        valkey.start()
        assert _wait_status(w, "/ready", 200, timeout=10)["checks"]["redis"] is True
        stats = w.wait_processed(1, timeout=20)
        assert stats["valid"] == 1, "the event held during the outage is applied"
    finally:
        valkey.close()
