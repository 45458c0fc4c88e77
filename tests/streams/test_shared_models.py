"""One model per deployment, through real worker processes, the real broker and Valkey.

Workers of one app id merge what they learned through Redis (models/sync.py): they end on
one generation with the same models, a worker started later serves them from its first event,
and a worker killed with ``kill -9`` comes back with what the deployment had merged.
"""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest

from benchmarks.multi_worker import PROBES
from models.sync import ModelSync
from tests.streams.conftest import WorkerProcess
from tests.streams.faultkit import (
    produce_all,
    read_labels,
    read_outputs,
    record,
    simulate,
    time_past,
    true_labels,
    wait_until,
)
from tests.streams.test_pipeline_e2e import _routed

HORIZON_S = 300.0
SYNC_S = 1.0
ENV = {
    "STREAMSCORE_TOPICS__PARTITIONS": "6",
    "STREAMSCORE_MODELS__SYNC_EVERY_S": str(SYNC_S),
    "STREAMSCORE_MODELS__PROPENSITY_HORIZON_MINUTES": str(HORIZON_S / 60),
    "STREAMSCORE_DECISION__ATTRIBUTION_WINDOW_MINUTES": "5",
    "STREAMSCORE_WORKER__PUBLISH_LABELS": "true",
    "STREAMSCORE_INTENT__ENABLED": "false",
    # time moves only with the events: ``push`` moves every partition past every deadline
    "STREAMSCORE_WORKER__IDLE_PARTITION_S": "600",
}


def models_of(w: WorkerProcess) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{w.web_port}/models", timeout=2.0) as r:
        return orjson.loads(r.read())


def predict(w: WorkerProcess) -> dict[str, Any]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{w.web_port}/models/predict",
        data=orjson.dumps({"features": PROBES}),
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=2.0) as r:
        return orjson.loads(r.read())


def generation_of(version: str) -> int:
    m = re.match(r"v(\d+)\+", version)
    assert m, version
    return int(m.group(1))


def settled(*workers: WorkerProcess) -> list[dict[str, Any]]:
    """The workers' ``/models`` once they serve one generation and learn nothing more."""
    docs: list[dict[str, Any]] = []

    def same() -> bool:
        nonlocal docs
        before = [models_of(w) for w in workers]
        time.sleep(2 * SYNC_S + 0.5)
        docs = [models_of(w) for w in workers]
        return before == docs and len({d["model_version"] for d in docs}) == 1

    wait_until(same, 60.0, "the workers to serve one generation")
    return docs


def send(env: dict[str, str], records: list[tuple[str, bytes, bytes]]) -> None:
    """``records``, then one event per partition a horizon later: every label and offer
    window of ``records`` resolves."""
    push = time_past(records, HORIZON_S + 60, int(ENV["STREAMSCORE_TOPICS__PARTITIONS"]))
    asyncio.run(produce_all(env["STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS"], records))
    asyncio.run(produce_all(env["STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS"], _routed(env, push)))


def snapshot(env: dict[str, str]) -> tuple[int, dict[str, Any], str]:
    async def read() -> tuple[int, dict[str, Any], str]:
        from redis.asyncio import Redis

        client = Redis.from_url(env["STREAMSCORE_REDIS__URL"])
        key = env["STREAMSCORE_MODELS__CHECKPOINT_KEY"].encode()
        sync = ModelSync(env["STREAMSCORE_REDIS__KEY_PREFIX"], key)
        await sync.start(client)
        try:
            got = await sync.fetch()
        finally:
            await client.aclose()
        assert got is not None, "no shared snapshot in Redis"
        return got

    return asyncio.run(read())


@pytest.mark.timeout(300)
def test_workers_serve_one_model_lineage_and_a_late_worker_starts_warm(
    worker_factory: Any, tmp_path: Path
) -> None:
    a = worker_factory(**ENV)
    b = worker_factory(**ENV)
    env = a.env
    a.wait_ready()
    b.wait_ready()
    records, _ = simulate(env, 3_000, seed=41, customers=300, rate=1.0)
    truth = true_labels(env, records, HORIZON_S)
    send(env, records)
    read_labels(env, len(truth), timeout=150.0)
    da, db = settled(a, b)
    assert da["model_digest"] == db["model_digest"], (da, db)
    assert da["learned"] == db["learned"], (da, db)
    # one model learned every label, each once: not two models that learned half each
    assert da["learned"]["propensity"] == len(truth), (da, len(truth))
    assert da["learned"]["bandit"] > 0, da
    pa, pb = predict(a), predict(b)
    assert pa == pb, "the same customer features must get the same segment and score"
    assert len(set(pa["propensity"])) > 1, "a trained model tells the probe customers apart"
    generation = da["model_generation"]

    # a third worker, started late with an empty checkpoint directory, serves the
    # deployment's models from its first event
    c = worker_factory(**ENV, STREAMSCORE_MODELS__CHECKPOINT_DIR=str(tmp_path / "c-ckpt"))
    c.wait_ready(timeout=60)
    dc = models_of(c)
    assert dc["model_generation"] >= generation, dc
    assert dc["learned"]["propensity"] >= len(truth), dc
    more, _ = simulate(env, 900, seed=43, customers=300, rate=1.0)
    asyncio.run(produce_all(env["STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS"], more))
    wait_until(lambda: (c.stats() or {}).get("offers", 0) > 0, 90.0, "offers by the third worker")
    later = {orjson.loads(v).get("event_id") for _, _, v in more if v.startswith(b"{")}
    offers = [o for o in read_outputs(env).offers if o["trigger_event_id"] in later]
    assert offers, "the later traffic should get offers"
    cold = [o["model_version"] for o in offers if generation_of(o["model_version"]) < generation]
    record(
        tmp_path,
        "shared_models",
        {
            "labels": len(truth),
            "generation": generation,
            "learned": da["learned"],
            "third_worker_started_at_generation": dc["model_generation"],
            "offers": len(offers),
            "offers_below_the_generation": len(cold),
        },
    )
    assert not cold, f"offers from models older than generation {generation}: {cold[:5]}"


@pytest.mark.timeout(300)
def test_kill_9_then_restart_continues_from_the_last_merge(
    worker_factory: Any, tmp_path: Path
) -> None:
    a = worker_factory(**ENV)
    env = a.env
    a.wait_ready()
    records, _ = simulate(env, 3_000, seed=47, customers=300, rate=1.0)
    truth = true_labels(env, records, HORIZON_S)
    send(env, records)
    read_labels(env, len(truth), timeout=150.0)
    wait_until(lambda: models_of(a)["learned"]["bandit"] > 0, 60.0, "bandit outcomes")
    # more traffic, and the worker dies in the middle of it
    more, _ = simulate(env, 1_500, seed=53, customers=300, rate=1.0)
    asyncio.run(produce_all(env["STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS"], more))
    a.wait_processed(3_500, timeout=120)
    before = models_of(a)
    assert a.proc is not None
    a.proc.kill()
    a.proc.wait()
    generation, state, digest = snapshot(env)
    b = worker_factory(**ENV)
    b.wait_ready(timeout=60)
    first = models_of(b)
    merged = {
        "propensity": round(state["propensity.n_learned"]),
        "segments": round(state["segments.n_learned"]),
        "text": round(
            state["text.sentiment.negative"]
            + state["text.sentiment.positive"]
            + state["text.topics.n_learned"]
        ),
        "anomaly": round(state["anomaly.n_learned"]),
        "bandit": round(sum(v for k, v in state.items() if k.startswith("bandit.n"))),
    }
    lost = {k: before["learned"][k] - v for k, v in merged.items()}
    record(
        tmp_path,
        "kill9_models",
        {
            "learned_before_kill": before["learned"],
            "generation_before_kill": before["model_generation"],
            "snapshot_generation": generation,
            "snapshot_learned": merged,
            "restarted_with": first["learned"],
            "restarted_generation": first["model_generation"],
            "lost_to_the_kill": lost,
        },
    )
    assert merged["propensity"] > 0 and merged["bandit"] > 0, merged
    # the restarted worker starts from the deployment's last merge, not from nothing
    assert first["model_generation"] >= generation, (first, generation)
    for part, n in merged.items():
        assert first["learned"][part] >= n, (part, first, merged)
    # the snapshot is at least as new as what the worker served just before it died: the
    # kill cost at most what it learned since its last merge (one interval)
    assert generation >= before["model_generation"], (before, generation)
    assert first["model_digest"] == digest or first["model_generation"] > generation, first


@pytest.mark.timeout(300)
def test_a_restarted_worker_serves_the_fine_tuned_lstm(worker_factory: Any, tmp_path: Path) -> None:
    intent = {
        **ENV,
        "STREAMSCORE_INTENT__ENABLED": "true",
        "STREAMSCORE_INTENT__SESSION_IDLE_MINUTES": "2",
        "STREAMSCORE_INTENT__FINETUNE_EVERY_SESSIONS": "400",
        "STREAMSCORE_INTENT__FINETUNE_EPOCHS": "3",
        "STREAMSCORE_INTENT__FINETUNE_LEARNING_RATE": "0.01",
    }
    a = worker_factory(**intent)
    env = a.env
    a.wait_ready()
    records, _ = simulate(env, 6_000, seed=59, customers=200, rate=1.0)
    send(env, records)
    wait_until(
        lambda: models_of(a)["learned"].get("intent_finetunes", 0) >= 1,
        120.0,
        "a fine-tuning run swapped in",
    )
    (before,) = settled(a)
    assert a.proc is not None
    a.proc.kill()
    a.proc.wait()
    # a fresh container: nothing on its disk, the deployment's models in Redis
    b = worker_factory(**intent, STREAMSCORE_MODELS__CHECKPOINT_DIR=str(tmp_path / "fresh"))
    b.wait_ready(timeout=60)
    after = models_of(b)
    record(
        tmp_path,
        "lstm_restart",
        {
            "finetunes": before["learned"]["intent_finetunes"],
            "intent_version_before": before["intent_version"],
            "intent_version_after": after["intent_version"],
            "same_weights": after["intent_digest"] == before["intent_digest"],
        },
    )
    assert after["intent_digest"] == before["intent_digest"], (before, after)
    assert after["intent_version"] == before["intent_version"] != "untrained", after
