"""The micro-batcher: stateful stepping, ordering, async flushes, rebuild, hot swap."""

from __future__ import annotations

import asyncio
import random

import pytest
import torch

from models.intent.batcher import IntentBatcher
from models.intent.model import EncodedSteps, IntentEncoder, IntentNet, IntentStep
from models.settings import IntentSettings

torch.set_num_threads(1)

T0 = 1_700_000_000.0
ACTIONS = ["view", "search", "add_to_cart", "remove_from_cart", "checkout_start"]


def make_net(seed: int = 0) -> tuple[IntentNet, IntentEncoder]:
    enc = IntentEncoder(category_buckets=32, item_buckets=64, customer_features=("prior_orders",))
    torch.manual_seed(seed)
    net = IntentNet(enc.n_numeric, category_buckets=32, item_buckets=64, hidden_size=16)
    return net, enc


def batcher(seed: int = 0, **kw: object) -> IntentBatcher:
    net, enc = make_net(seed)
    settings = IntentSettings(device="cpu", **{"max_sessions": 1000, **kw})
    return IntentBatcher(net, enc, settings)


def interleaved(n_sessions: int, n_steps: int, seed: int = 0) -> list[IntentStep]:
    """Steps of ``n_sessions`` sessions, interleaved at random but in order per session."""
    rng = random.Random(seed)
    left = {i: n_steps for i in range(n_sessions)}
    t = T0
    out = []
    while left:
        i = rng.choice(sorted(left))
        left[i] -= 1
        if not left[i]:
            del left[i]
        t += rng.uniform(0.1, 5)
        price = None if rng.random() < 0.3 else round(rng.uniform(1, 99), 2)
        out.append(
            IntentStep(
                f"c{i % 7}",
                f"s{i}",
                t,
                rng.choice(ACTIONS),
                rng.choice("abc"),
                f"i{rng.randrange(20)}",
                price,
                {"prior_orders": i % 3},
            )
        )
    return out


def close(a: list[dict[str, float]], b: list[dict[str, float]]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            assert x[k] == pytest.approx(y[k], abs=1e-5)


def test_batched_equals_one_at_a_time_and_whole_sequence() -> None:
    steps = interleaved(12, 6)
    one = batcher()
    serial = [one.step_many([s])[0] for s in steps]
    many = batcher()
    batched = many.step_many(steps)  # each session's 6 steps in one call: applied in order
    close(serial, batched)
    assert many.forwards == 6 and one.forwards == len(steps)
    # ... and equal to running each whole session at once.
    net, enc = make_net()
    for sid in ("s0", "s5"):
        mine = [s for s in steps if s.session_id == sid]
        x = enc.encode_session(mine)
        with torch.inference_mode():
            probs = torch.softmax(
                net.eval().forward_sequence(
                    EncodedSteps(
                        x.actions[None], x.categories[None], x.items[None], x.numeric[None]
                    )
                ),
                -1,
            )[0]
        got = [r for s, r in zip(steps, batched, strict=True) if s.session_id == sid]
        for p, r in zip(probs.tolist(), got, strict=True):
            assert p == pytest.approx([r["purchase"], r["abandon"], r["browse"]], abs=1e-5)


def test_results_are_distributions_and_positions_advance() -> None:
    b = batcher()
    out = b.step_many(interleaved(3, 4))
    assert all(sum(r.values()) == pytest.approx(1.0) for r in out)
    assert sorted(b.slots.position[b.slots.row(k)] for k in b.slots.sessions()) == [4, 4, 4]
    assert b.steps == 12 and b.predict_proba_many([]) == []


def test_chunks_at_max_batch() -> None:
    steps = interleaved(10, 1)
    b = batcher(max_batch=4)
    close(b.step_many(steps), batcher().step_many(steps))
    assert b.forwards == 3


def test_async_step_micro_batches_and_returns_each_own_result() -> None:
    steps = interleaved(20, 3, seed=2)
    expected = batcher().step_many(steps)

    async def main() -> tuple[list[dict[str, float]], int]:
        b = batcher(max_batch=8, max_wait_ms=5.0)
        # Submit in order (per-session order is arrival order), then await all together.
        tasks = [asyncio.ensure_future(b.step(s)) for s in steps]
        out = await asyncio.gather(*tasks)
        await b.flush()
        return list(out), b.forwards

    out, forwards = asyncio.run(main())
    close(out, expected)
    assert forwards < len(steps)


def test_async_flushes_after_max_wait() -> None:
    async def main() -> float:
        b = batcher(max_batch=1000, max_wait_ms=20.0)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await b.step(interleaved(1, 1)[0])
        return loop.time() - t0

    assert 0.015 <= asyncio.run(main()) < 1.0


def test_rebuild_from_history_after_eviction_equals_no_eviction() -> None:
    steps = interleaved(30, 8, seed=4)
    reference = batcher().step_many(steps)
    small = batcher(max_sessions=5)
    seen: dict[tuple[str, str], list[IntentStep]] = {}
    out = []
    for lo in range(0, len(steps), 4):
        chunk = steps[lo : lo + 4]
        missing = small.missing([s.session_key for s in chunk])
        history = {k: list(seen.get(k, [])) for k in missing}
        out += small.step_many(chunk, history=history)
        for s in chunk:
            seen.setdefault(s.session_key, []).append(s)
    assert small.slots.evictions > 0 and small.replayed_steps > 0
    close(out, reference)


def test_batch_with_more_sessions_than_slots_runs_in_parts() -> None:
    steps = interleaved(7, 6, seed=2)
    reference = batcher().step_many(steps)
    small = batcher(max_sessions=3)
    seen: dict[tuple[str, str], list[IntentStep]] = {}
    out = []
    for lo in range(0, len(steps), 14):  # each batch holds all 7 sessions
        chunk = steps[lo : lo + 14]
        missing = small.missing([s.session_key for s in chunk])
        history = {k: list(seen.get(k, [])) for k in missing}
        out += small.step_many(chunk, history=history)
        for s in chunk:
            seen.setdefault(s.session_key, []).append(s)
    assert small.slots.evictions > 0
    close(out, reference)


def test_expire_and_end_session() -> None:
    b = batcher(session_idle_minutes=1.0)
    steps = interleaved(3, 1)
    b.step_many(steps)
    last = max(s.ts for s in steps)
    assert b.end_session(steps[0].session_key)
    assert b.expire(last + 30.0) == []
    assert len(b.expire(last + 3600.0)) == 2 and len(b.slots) == 0


def test_abandon_rise() -> None:
    b = batcher()
    s = interleaved(1, 2)
    r1, r2 = b.step_many(s)
    assert b.abandon_rise(s[0].session_key) == pytest.approx(r2["abandon"] - r1["abandon"])
    assert b.abandon_rise(("nobody", "x")) == 0.0


def test_hot_swap_changes_outputs_in_place() -> None:
    b = batcher(seed=0)
    other, _ = make_net(seed=1)
    steps = interleaved(2, 1)
    before = batcher(seed=0).step_many(steps)
    b.swap_weights(other.state_dict(), "v2")
    after = b.step_many(steps)
    assert b.version == "v2" and after[0]["purchase"] != before[0]["purchase"]
    close(after, batcher(seed=1).step_many(steps))
    with pytest.raises(ValueError):
        b.swap_weights({"nope": torch.zeros(1)}, "v3")


def test_reset_on_revocation() -> None:
    b = batcher()
    b.step_many(interleaved(4, 1))
    assert b.reset(keep=lambda k: k[1] == "s0") == 3 and len(b.slots) == 1
    assert b.reset() == 1 and len(b.slots) == 0
