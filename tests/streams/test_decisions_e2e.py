"""Logged propensities end to end: a worker's offers carry them, ``export-decisions`` joins
them with their outcomes, and ``evaluate`` reads the result (and the topics directly).

A three-offer catalog (all eligible for a sports click), part of the customers in the control
group; event times two hours in the past, so 2-minute attribution windows close by event time
once each partition sees a later click.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from tests.streams.conftest import consume, produce
from tests.streams.test_pipeline_e2e import _routed, click, purchase

T0 = float(int(time.time()) - 7200)
N = 12  # customers


def _catalog(tmp_path: Path) -> str:
    offers = [
        {"offer_id": "sports-10", "name": "10% off sports", "kind": "discount", "value": 10.0,
         "target_categories": ["sports"]},
        {"offer_id": "sports-ship", "name": "Free shipping", "kind": "free_shipping",
         "value": 9.0, "target_categories": ["sports"]},
        {"offer_id": "any-5", "name": "5 off", "kind": "discount", "value": 5.0},
    ]  # fmt: skip
    path = tmp_path / "catalog.json"
    path.write_bytes(orjson.dumps({"version": 1, "offers": offers}))
    return str(path)


def _cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    return done.stdout.decode()


async def _snapshot(env: dict[str, str], timeout: float = 20.0) -> bool:
    client = Redis.from_url(env["STREAMSCORE_REDIS__URL"])
    key = f"{env['STREAMSCORE_REDIS__KEY_PREFIX']}:{{models}}:snapshot"
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await client.exists(key):
                return True
            await asyncio.sleep(0.2)
        return False
    finally:
        await client.aclose()


@pytest.mark.timeout(120)
def test_offers_carry_propensities_that_export_and_evaluate_use(
    worker_factory: Any, tmp_path: Path
) -> None:
    w = worker_factory(
        STREAMSCORE_DECISION__CATALOG_PATH=_catalog(tmp_path),
        STREAMSCORE_DECISION__CONTROL_PERCENT="35",
        STREAMSCORE_DECISION__CONTROL_NO_OFFER_SHARE="0",  # every click gets an offer
        STREAMSCORE_DECISION__ATTRIBUTION_WINDOW_MINUTES="2",
        STREAMSCORE_INTENT__ENABLED="false",
        STREAMSCORE_MODELS__SYNC_EVERY_S="1",
    )
    w.wait_ready()
    env = w.env
    bootstrap = env["STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS"]
    first = [click(f"a{i}", f"c{i}", T0, "view", "sports", 40.0) for i in range(N)]
    buys = [purchase(f"p{i}", f"c{i}", T0 + 60, 40.0, "sports") for i in range(0, N, 2)]
    asyncio.run(produce(bootstrap, _routed(env, first + buys)))
    w.wait_processed(len(first) + len(buys))
    # time moves on in every customer's partition: the 2-minute windows close
    later = [
        click(f"b{i}", f"c{i}", T0 + 600, "view", "books", 5.0, session="s9") for i in range(N)
    ]
    asyncio.run(produce(bootstrap, _routed(env, later)))
    offers_t, outcomes_t = (
        env["STREAMSCORE_TOPICS__OFFERS"],
        env["STREAMSCORE_TOPICS__OFFER_OUTCOMES"],
    )
    got = asyncio.run(
        consume(
            bootstrap,
            [offers_t, outcomes_t],
            until=lambda g: len(g[outcomes_t]) >= N and len(g[offers_t]) >= N,
            timeout=40,
        )
    )
    offers, outcomes = got[offers_t], got[outcomes_t]
    assert len(outcomes) >= N, (len(offers), outcomes, w.log()[-3000:])
    firsts = [o for o in offers if o["trigger_event_id"].startswith("a")]
    assert len(firsts) == N, offers
    for o in firsts:
        assert 0.0 < o["policy_propensity"] <= 1.0, o
        assert o["offer_id"] in o["eligible"], o
        assert len(o["contexts"]) == len(o["eligible"]), o
        assert set(o["eligible"]) == {"sports-10", "sports-ship", "any-5"}, o
    arms = {o["offer_event_id"]: o["arm"] for o in outcomes}
    by_arm: dict[str, set[float]] = {}
    for o in firsts:
        by_arm.setdefault(arms[o["offer_event_id"]], set()).add(o["policy_propensity"])
    assert by_arm.get("control", set()) <= {round(1 / 3, 6)}, by_arm
    assert all(p < 1.0 for p in by_arm["bandit"]), by_arm  # it explores: never certain

    log = tmp_path / "decisions.jsonl"
    said = _cli(env, "export-decisions", "--out", str(log), "--timeout", "20")
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(lines) >= N, (said, lines)
    converted = {f"c{i}" for i in range(0, N, 2)}
    for line in lines:
        assert line["action"] in line["eligible"] and 0.0 < line["propensity"] <= 1.0
        if line["customer_id"] in converted and line["ts"] == T0:
            assert line["reward"] == 1.0, line

    out = tmp_path / "eval"
    table = _cli(env, "evaluate", "--input", str(log), "--out", str(out), "--always", "any-5")
    doc = json.loads((out / "evaluation.json").read_text())
    assert doc["decisions"] == len(lines), (table, doc)
    assert {"fixed rule", "uniform random", "always any-5"} <= set(doc["targets"]), doc
    assert (out / "evaluation.png").stat().st_size > 0 and "| fixed rule |" in table
    assert doc["uplift"]["treatment_n"] + doc["uplift"]["control_n"] == len(lines), doc

    # straight from the topics, with the bandit of the deployment's snapshot in Redis
    assert asyncio.run(_snapshot(env)), w.log()[-3000:]
    out2 = tmp_path / "eval-topics"
    _cli(env, "evaluate", "--redis", "--out", str(out2), "--timeout", "20")
    doc2 = json.loads((out2 / "evaluation.json").read_text())
    assert doc2["decisions"] >= N and "bandit (epsilon_greedy)" in doc2["targets"], doc2
