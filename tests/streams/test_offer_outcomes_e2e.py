"""Offers that learn, end to end: outcomes, contact policy and suppressions through a worker.

One-offer catalogs and no control group keep the arbitration deterministic; event times are
two hours in the past, so attribution windows close by event time (the worker's clock).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from features.keys import customer_key
from tests.streams.conftest import consume, produce
from tests.streams.test_pipeline_e2e import _routed, click, feedback, purchase

T0 = float(int(time.time()) - 7200)


def _catalog(tmp_path: Path) -> str:
    path = tmp_path / "catalog.json"
    offer = {
        "offer_id": "sports-10",
        "name": "10% off sports",
        "kind": "discount",
        "value": 10.0,
        "target_categories": ["sports"],
    }
    path.write_bytes(orjson.dumps({"version": 1, "offers": [offer]}))
    return str(path)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "STREAMSCORE_DECISION__CATALOG_PATH": _catalog(tmp_path),
        "STREAMSCORE_DECISION__CONTROL_PERCENT": "0",
        "STREAMSCORE_INTENT__ENABLED": "false",
        **extra,
    }


def _read(env: dict[str, str], key: str, until: Any, timeout: float = 20.0) -> list[dict]:
    topic = env[key]
    got = asyncio.run(
        consume(
            env["STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS"],
            [topic],
            until=lambda g: until(g[topic]),
            timeout=timeout,
        )
    )
    return got[topic]


def _send(env: dict[str, str], records: list[tuple[str, bytes, bytes]]) -> None:
    asyncio.run(produce(env["STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS"], _routed(env, records)))


async def _opted_out(env: dict[str, str], cid: str, timeout: float = 15.0) -> bool:
    client = Redis.from_url(env["STREAMSCORE_REDIS__URL"])
    key = customer_key(env["STREAMSCORE_REDIS__KEY_PREFIX"], cid, "optout")
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await client.exists(key):
                return True
            await asyncio.sleep(0.1)
        return False
    finally:
        await client.aclose()


@pytest.mark.timeout(90)
def test_offer_converts_or_expires_within_its_attribution_window(
    worker_factory: Any, tmp_path: Path
) -> None:
    w = worker_factory(**_env(tmp_path, STREAMSCORE_DECISION__ATTRIBUTION_WINDOW_MINUTES="2"))
    w.wait_ready()
    env = w.env
    _send(
        env,
        [
            click("a1", "c1", T0, "view", "sports", 50.0),
            click("a2", "c2", T0, "view", "sports", 50.0, session="s2"),
            purchase("a3", "c1", T0 + 60, 50.0, "sports"),  # target category: converts
            purchase("a4", "c2", T0 + 60, 12.0, "books"),  # not a target: no conversion
        ],
    )
    w.wait_processed(4)
    # time moves on in c2's partition (windows expire on their customer's partition's time)
    _send(env, [click("a5", "c2", T0 + 300, "view", "books", 9.0, session="s3")])
    outcomes = _read(env, "STREAMSCORE_TOPICS__OFFER_OUTCOMES", lambda v: len(v) >= 2)
    by_cid = {o["customer_id"]: o for o in outcomes}
    assert set(by_cid) == {"c1", "c2"}, outcomes
    won, lost = by_cid["c1"], by_cid["c2"]
    assert (won["converted"], won["order_id"], won["revenue"]) == (True, "o-a3", 50.0), (
        outcomes,
        w.stats(),
        w.log()[-3000:],
    )
    assert (won["offer_id"], won["arm"], won["ts"]) == ("sports-10", "bandit", T0 + 60)
    assert (lost["converted"], lost["order_id"], lost["ts"]) == (False, None, T0 + 120)
    offers = _read(env, "STREAMSCORE_TOPICS__OFFERS", lambda v: len(v) >= 2)
    ids = {o["customer_id"]: o["offer_event_id"] for o in offers}
    assert (won["offer_event_id"], lost["offer_event_id"]) == (ids["c1"], ids["c2"])
    assert "arbitration:bandit_ucb" in offers[0]["reasons"], offers[0]["reasons"]
    stats = w.stats() or {}
    assert stats["offer_outcomes"]["sports-10"]["conversions"] == 1, stats
    assert stats["offer_outcomes"]["sports-10"]["resolved"] == 2, stats


@pytest.mark.timeout(90)
def test_a_replayed_conversion_is_published_again_and_learned_once(
    worker_factory: Any, tmp_path: Path
) -> None:
    w = worker_factory(**_env(tmp_path, STREAMSCORE_DECISION__ATTRIBUTION_WINDOW_MINUTES="60"))
    w.wait_ready()
    env = w.env
    bought = purchase("b2", "c1", T0 + 60, 50.0, "sports")
    _send(env, [click("b1", "c1", T0, "view", "sports", 50.0), bought])
    first = _read(env, "STREAMSCORE_TOPICS__OFFER_OUTCOMES", lambda v: len(v) >= 1)
    assert [(o["converted"], o["order_id"]) for o in first] == [(True, "o-b2")]
    _send(env, [bought])  # the purchase again: a replay, as after a crash before the commit
    w.wait_processed(3)
    both = _read(env, "STREAMSCORE_TOPICS__OFFER_OUTCOMES", lambda v: len(v) >= 2)
    assert both == [first[0], first[0]], "re-emitted with the same id and content"
    stats = w.stats() or {}
    assert stats["duplicates"] == 1, stats
    assert stats["bandit_learned"] == 1, "the reward is learned once"
    assert stats["offer_outcomes"]["sports-10"]["conversions"] == 1, stats


@pytest.mark.timeout(90)
def test_contact_policy_offer_cap_negative_feedback_and_suppression(
    worker_factory: Any, tmp_path: Path
) -> None:
    w = worker_factory(**_env(tmp_path, STREAMSCORE_DECISION__FREQUENCY_CAP_MINUTES="0"))
    w.wait_ready()
    env = w.env
    cli = subprocess.run(
        [sys.executable, "-m", "streams.cli", "suppress", "c7", "--reason", "gdpr"],
        env={**os.environ, **env},
        capture_output=True,
        timeout=30,
    )
    assert cli.returncode == 0, cli.stderr.decode()[-2000:]
    # feedback first: clicks and feedback are different topics, read in no fixed order
    _send(env, [feedback("b3", "c4", T0, 1, "Terrible, the box was damaged")])
    w.wait_processed(1)
    assert asyncio.run(_opted_out(env, "c7")), w.log()
    records = [
        click("b1", "c1", T0, "view", "sports", 50.0),
        click("b2", "c1", T0 + 600, "view", "sports", 50.0),  # same offer within 24 h: capped
        click("b4", "c4", T0 + 60, "view", "sports", 50.0, session="s4"),  # negative feedback
        click("b5", "c5", T0 + 60, "view", "sports", 50.0, session="s5"),  # gets one
        click("b6", "c7", T0 + 60, "view", "sports", 50.0, session="s7"),  # opted out
    ]
    _send(env, records)
    w.wait_processed(1 + len(records))
    offers = _read(env, "STREAMSCORE_TOPICS__OFFERS", lambda v: len(v) >= 2)
    time.sleep(0.5)  # nothing more may come
    offers = _read(env, "STREAMSCORE_TOPICS__OFFERS", lambda v: False, timeout=1.0)
    assert sorted(o["trigger_event_id"] for o in offers) == ["b1", "b5"], offers
    blocked = (w.stats() or {})["contact_policy"]
    assert blocked.get("blocked:offer_cap") == 1, blocked
    assert blocked.get("blocked:negative_feedback") == 1, blocked
    assert blocked.get("blocked:suppressed") == 1, blocked


@pytest.mark.timeout(90)
def test_quiet_hours_follow_the_wall_clock_not_the_events_time(
    worker_factory: Any, tmp_path: Path
) -> None:
    """A click stamped inside the quiet hours but read outside them (now, on the wall clock)
    gets its offer: the message goes out now. (The reverse, a backlog read during the quiet
    hours, is tests/streams/test_secure_defaults.py.)"""
    hour = int((T0 % 86_400) // 3600)  # the local hour of T0 at UTC+2, minus the offset
    local = (hour + 2) % 24
    now_local = (time.gmtime().tm_hour + 2) % 24
    assert now_local != local, "T0 is two hours ago: its hour is not the wall clock's"
    w = worker_factory(
        **_env(
            tmp_path,
            STREAMSCORE_DECISION__QUIET_HOURS_START=str(local),
            STREAMSCORE_DECISION__QUIET_HOURS_END=str((local + 1) % 24),
            STREAMSCORE_DECISION__UTC_OFFSET_HOURS="2",
        )
    )
    w.wait_ready()
    env = w.env
    late = (T0 // 3600 + 1) * 3600 + 10  # the next hour: not quiet by the event's time either
    _send(
        env,
        [
            click("q1", "c1", T0, "view", "sports", 50.0),
            click("q2", "c2", late, "view", "sports", 50.0, session="s2"),
        ],
    )
    w.wait_processed(2)
    offers = _read(env, "STREAMSCORE_TOPICS__OFFERS", lambda v: len(v) >= 2)
    assert sorted(o["trigger_event_id"] for o in offers) == ["q1", "q2"], offers
    assert (w.stats() or {})["contact_policy"].get("blocked:quiet_hours", 0) == 0
