"""Session intent through a real worker: every click gets one, and a session whose state was
evicted, or whose partition moved to another worker, is rebuilt from the Redis session log so
its intent equals the one computed without interruption."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from tests.streams.conftest import consume, produce
from tests.streams.faultkit import wait_until

T0 = float(int(time.time()) - 3600)
ACTIONS = ["view", "search", "view", "add_to_cart", "view", "checkout_start", "view", "view"]


def _clicks(env: dict[str, str]) -> list[tuple[str, bytes, bytes]]:
    """Four interleaved sessions of eight clicks."""
    out = []
    for step, action in enumerate(ACTIONS):
        for s in range(4):
            cid = f"c{s}"
            doc = {
                "event_id": f"e{s}-{step}",
                "customer_id": cid,
                "session_id": f"s{s}",
                "ts": T0 + 20 * step + s,
                "action": action,
                "item_id": f"i{s}-{step % 3}",
                "category": ["toys", "books", "home", "sports"][s],
                "price": 10.0 + s + step,
            }
            out.append((env["STREAMSCORE_TOPICS__CLICKS"], cid.encode(), orjson.dumps(doc)))
    return out


def _own_stack(unique: Callable[[str], str], **extra: str) -> dict[str, str]:
    env = {
        f"STREAMSCORE_TOPICS__{k.upper()}": unique(k)
        for k in ("clicks", "purchases", "feedback", "offers", "alerts", "dead_letters", "intents")
    }
    env.update(
        {
            "STREAMSCORE_REDIS__KEY_PREFIX": unique("ss"),
            "STREAMSCORE_WORKER__APP_ID": unique("app"),
            "STREAMSCORE_WORKER__PUBLISH_INTENTS": "true",
            **extra,
        }
    )
    return env


def _intents(env: dict[str, str], n: int) -> dict[str, list[float]]:
    topic = env["STREAMSCORE_TOPICS__INTENTS"]
    got = asyncio.run(
        consume(
            env["STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS"],
            [topic],
            until=lambda g: len(g[topic]) >= n,
            timeout=30,
        )
    )
    return {i["trigger_event_id"]: [i["purchase"], i["abandon"], i["browse"]] for i in got[topic]}


def _assert_same(got: dict[str, list[float]], want: dict[str, list[float]], what: str) -> None:
    assert got.keys() == want.keys(), f"{what}: intents for {sorted(got)} vs {sorted(want)}"
    worst = max(abs(a - b) for k in want for a, b in zip(got[k], want[k], strict=True))
    assert worst < 1e-4, f"{what}: intents differ by up to {worst:.2e} from the reference"


@pytest.mark.timeout(180)
def test_every_click_gets_an_intent_and_rebuilds_match(
    worker_factory: Any, unique: Callable[[str], str]
) -> None:
    # reference: one worker, room for every session
    ref = worker_factory(**_own_stack(unique))
    ref.wait_ready()
    clicks = _clicks(ref.env)
    bootstrap = ref.env["STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS"]
    asyncio.run(produce(bootstrap, clicks))
    reference = _intents(ref.env, len(clicks))
    assert len(reference) == len(clicks), "one intent per click"
    for probs in reference.values():
        assert abs(sum(probs) - 1.0) < 1e-5 and all(0.0 <= p <= 1.0 for p in probs)

    # eviction: a slot table of one session, four sessions interleaved -> constant rebuilds
    ev = worker_factory(**_own_stack(unique, STREAMSCORE_INTENT__MAX_SESSIONS="1"))
    ev.wait_ready()
    asyncio.run(produce(bootstrap, _clicks(ev.env)))
    _assert_same(_intents(ev.env, len(clicks)), reference, "after evictions")

    # rebalance: worker A takes the first half, stops; worker B (same group) takes the rest
    env = _own_stack(unique)
    a = worker_factory(**env)
    a.wait_ready()
    rb_clicks = _clicks({**ref.env, **env})
    half = len(rb_clicks) // 2
    asyncio.run(produce(bootstrap, rb_clicks[:half]))
    a.wait_processed(half)
    a.stop(signal.SIGTERM)
    b = worker_factory(**env)
    b.wait_ready()
    asyncio.run(produce(bootstrap, rb_clicks[half:]))
    _assert_same(_intents({**ref.env, **env}, len(clicks)), reference, "after a rebalance")


@pytest.mark.timeout(240)
def test_a_partition_that_comes_back_is_rebuilt_not_resumed_stale(
    worker_factory: Any, unique: Callable[[str], str]
) -> None:
    ref = worker_factory(**_own_stack(unique))
    ref.wait_ready()
    bootstrap = ref.env["STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS"]
    asyncio.run(produce(bootstrap, _clicks(ref.env)))
    n = 4 * len(ACTIONS)
    reference = _intents(ref.env, n)
    ref.stop(signal.SIGTERM)

    # A steps every session, B takes one of the two partitions and steps them on, B leaves:
    # A gets the partition back, with its own states of those sessions three clicks behind.
    env = _own_stack(unique)
    clicks = _clicks({**ref.env, **env})
    a = worker_factory(**env)
    a.wait_ready()
    alone = a.assigned()
    asyncio.run(produce(bootstrap, clicks[:12]))
    a.wait_processed(12)
    b = worker_factory(**env)
    b.wait_ready()
    wait_until(lambda: 0 < a.assigned() < alone, 60.0, "A to give B its share")
    asyncio.run(produce(bootstrap, clicks[12:24]))

    def handled() -> int:
        return sum(int((w.stats() or {}).get("records", 0)) for w in (a, b))

    wait_until(lambda: handled() >= 24, 60.0, "both workers to handle the second part")
    assert (b.stats() or {}).get("records", 0) > 0, "B stepped some sessions"
    b.stop(signal.SIGTERM)
    wait_until(lambda: a.assigned() == alone, 60.0, "A to own every partition again")
    asyncio.run(produce(bootstrap, clicks[24:]))
    _assert_same(_intents({**ref.env, **env}, n), reference, "after A -> B -> A")
