"""The whole-batch encoding and stepping equal the per-click code they replaced.

``_reference_encode_row`` and ``_ReferenceStepper`` are the per-row encoder and the per-step
forward pass as they were before the encoding was vectorised (kept here only as the oracle).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import numpy as np
import pytest
import torch

from models.intent import model as intent_model
from models.intent.batcher import IntentBatcher
from models.intent.model import (
    _ACTION_INDEX,
    INTENT_LABELS,
    EncodedSteps,
    IntentEncoder,
    IntentNet,
    IntentStep,
)
from models.settings import IntentSettings

torch.set_num_threads(1)

T0 = 1_700_000_000.0
FEATURES = ("prior_orders", "prior_spend", "tenure_days")
ACTIONS = ["view", "search", "add_to_cart", "remove_from_cart", "checkout_start", "wishlist"]


def _reference_signed_log1p(x: float) -> float:
    if not math.isfinite(x):
        return 0.0
    return math.copysign(math.log1p(abs(x)), x)


def _reference_encode_row(
    enc: IntentEncoder, step: IntentStep, prev_ts: float | None, position: int
) -> tuple[int, int, int, list[float]]:
    dt = 0.0 if prev_ts is None else max(0.0, step.ts - prev_ts)
    price = step.price
    numeric = [
        math.log1p(price) if price is not None and price > 0 else 0.0,
        0.0 if price is None else 1.0,
        math.log1p(dt),
        1.0 if position == 0 else 0.0,
        math.log1p(position),
    ]
    for name in enc.customer_features:
        v = step.customer.get(name)
        numeric.append(0.0 if v is None else _reference_signed_log1p(float(v)))
    return (
        _ACTION_INDEX.get(step.action, 0),
        enc.bucket(step.category, enc.category_buckets),
        enc.bucket(step.item_id, enc.item_buckets),
        numeric,
    )


def _reference_encode(
    enc: IntentEncoder,
    steps: Sequence[IntentStep],
    prev_ts: Sequence[float | None],
    positions: Sequence[int],
) -> EncodedSteps:
    rows = [
        _reference_encode_row(enc, s, p, n)
        for s, p, n in zip(steps, prev_ts, positions, strict=True)
    ]
    idx = torch.tensor([r[:3] for r in rows], dtype=torch.long).reshape(len(rows), 3)
    numeric = torch.tensor([r[3] for r in rows], dtype=torch.float32)
    return EncodedSteps(idx[:, 0], idx[:, 1], idx[:, 2], numeric.reshape(len(rows), enc.n_numeric))


class _ReferenceStepper:
    """The stepping path before vectorisation: waves of one step per session, chunks of
    ``max_batch``, per-row encoding, one ``net.step`` per chunk. Never evicts."""

    def __init__(self, net: IntentNet, enc: IntentEncoder, max_batch: int) -> None:
        self.net, self.enc, self.max_batch = net.eval(), enc, max_batch
        self.state: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor, float, int]] = {}

    def step_many(self, steps: Sequence[IntentStep]) -> list[dict[str, float]]:
        seen: dict[tuple[str, str], int] = {}
        waves: list[list[int]] = []
        for i, s in enumerate(steps):
            w = seen.get(s.session_key, 0)
            seen[s.session_key] = w + 1
            if w == len(waves):
                waves.append([])
            waves[w].append(i)
        out: list[dict[str, float]] = [{}] * len(steps)
        with torch.inference_mode():
            for wave in waves:
                for lo in range(0, len(wave), self.max_batch):
                    chunk = wave[lo : lo + self.max_batch]
                    for i, res in zip(chunk, self._forward([steps[i] for i in chunk]), strict=True):
                        out[i] = res
        return out

    def _forward(self, batch: list[IntentStep]) -> list[dict[str, float]]:
        zero = torch.zeros(self.net.hidden_size)
        states = [self.state.get(s.session_key, (zero, zero, None, 0)) for s in batch]
        x = _reference_encode(self.enc, batch, [st[2] for st in states], [st[3] for st in states])
        h = torch.stack([st[0] for st in states])
        c = torch.stack([st[1] for st in states])
        logits, h, c = self.net.step(x, h, c)
        probs = torch.softmax(logits, dim=-1).tolist()
        for j, (s, st) in enumerate(zip(batch, states, strict=True)):
            self.state[s.session_key] = (h[j].clone(), c[j].clone(), s.ts, st[3] + 1)
        return [dict(zip(INTENT_LABELS, p, strict=True)) for p in probs]


def _odd_value(rng: random.Random) -> object:
    return rng.choice(
        [None, 0, 3, -2, 1.5, -0.25, 1e9, True, "7.5", math.nan, math.inf, -math.inf, 0.0]
    )


def _varied_steps(n: int, seed: int) -> tuple[list[IntentStep], list[float | None], list[int]]:
    """Steps with first steps, unknown and unseen values, odd prices and customer features,
    out-of-order times and positions of long sessions."""
    rng = random.Random(seed)
    steps, prev_ts, positions = [], [], []
    for i in range(n):
        ts = T0 + rng.uniform(0, 1e5)
        price = rng.choice([None, None, 0.0, -3.0, 19.99, 1e7, math.nan, math.inf, 250])
        customer = {f: _odd_value(rng) for f in FEATURES if rng.random() < 0.7}
        if rng.random() < 0.2:
            customer["not_a_feature"] = 1.0
        steps.append(
            IntentStep(
                f"c{i % 13}",
                f"s{i}",
                ts,
                rng.choice(ACTIONS),
                rng.choice(["shoes", "books", "", "unseen-" + str(rng.randrange(10**6))]),
                rng.choice(["i1", "i2", f"item-{rng.randrange(10**9)}", "ü-ñ"]),
                price,
                customer,
            )
        )
        first = rng.random() < 0.25
        prev_ts.append(None if first else ts - rng.choice([0.0, 0.5, 30.0, -20.0, 86_400.0]))
        positions.append(0 if first else rng.choice([1, 2, 7, 199, 10_000]))
    return steps, prev_ts, positions


@pytest.fixture(params=["numpy", "step by step"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with every batch encoded by one of ``encode_arrays``'s two paths."""
    monkeypatch.setattr(intent_model, "_ROW_BY_ROW_MAX", 0 if request.param == "numpy" else 10**9)
    return str(request.param)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batch_encoding_equals_per_row_encoding(path: str, seed: int) -> None:
    enc = IntentEncoder(category_buckets=64, item_buckets=512, customer_features=FEATURES)
    steps, prev_ts, positions = _varied_steps(300, seed)
    want = _reference_encode(enc, steps, prev_ts, positions)
    for _ in range(2):  # the second time every id comes from the memo
        got = enc.encode(steps, prev_ts=prev_ts, positions=positions)
        for name in ("actions", "categories", "items"):
            assert torch.equal(getattr(got, name), getattr(want, name)), name
        assert got.numeric.dtype == torch.float32 and got.numeric.shape == want.numeric.shape
        torch.testing.assert_close(got.numeric, want.numeric, rtol=0, atol=1e-6)
    assert (got.actions == 0).any()  # an unknown action is 0
    # NaN marks a first step as well as None does (that is how the slot table stores it).
    as_nan = [math.nan if p is None else p for p in prev_ts]
    again = enc.encode(steps, prev_ts=as_nan, positions=np.asarray(positions))
    assert torch.equal(again.numeric, got.numeric)


@pytest.mark.parametrize("size", [1, 2, 16, 17, 64])
def test_small_and_large_batches_encode_alike(size: int) -> None:
    """Below ``_ROW_BY_ROW_MAX`` steps the encoder loops; above it, numpy: same arrays."""
    enc = IntentEncoder(category_buckets=64, item_buckets=512, customer_features=FEATURES)
    steps, prev_ts, positions = _varied_steps(128, seed=size)
    ids, numeric, ts = enc.encode_arrays(steps, prev_ts=prev_ts, positions=positions)
    for lo in range(0, len(steps), size):
        part = slice(lo, lo + size)
        p_ids, p_numeric, p_ts = enc.encode_arrays(
            steps[part], prev_ts=prev_ts[part], positions=positions[part]
        )
        assert (p_ids.dtype, p_numeric.dtype, p_ts.dtype) == (np.int64, np.float32, np.float64)
        assert p_ids.flags.c_contiguous and p_numeric.flags.c_contiguous
        np.testing.assert_array_equal(p_ids, ids[:, part])
        np.testing.assert_allclose(p_numeric, numeric[part], rtol=0, atol=1e-6)
        np.testing.assert_array_equal(p_ts, ts[part])


def test_batch_encoding_without_customer_features_and_when_the_memo_overflows(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(intent_model, "_MEMO_SIZE", 8)
    enc = IntentEncoder(category_buckets=16, item_buckets=32)
    steps, prev_ts, positions = _varied_steps(200, seed=5)
    want = _reference_encode(enc, steps, prev_ts, positions)
    got = enc.encode(steps, prev_ts=prev_ts, positions=positions)
    assert torch.equal(got.items, want.items) and torch.equal(got.categories, want.categories)
    torch.testing.assert_close(got.numeric, want.numeric, rtol=0, atol=1e-6)
    assert len(enc._item_ids) <= 8


def test_encode_session_and_empty_and_mismatched_batches(path: str) -> None:
    enc = IntentEncoder(customer_features=FEATURES)
    steps, _, _ = _varied_steps(50, seed=3)
    session = sorted(
        (
            IntentStep("c", "s", s.ts, s.action, s.category, s.item_id, s.price, s.customer)
            for s in steps
        ),
        key=lambda s: s.ts,
    )
    got = enc.encode_session(session)
    want = _reference_encode(
        enc, session, [None, *(s.ts for s in session[:-1])], list(range(len(session)))
    )
    torch.testing.assert_close(got.numeric, want.numeric, rtol=0, atol=1e-6)
    assert torch.equal(got.items, want.items)
    empty = enc.encode([], prev_ts=[], positions=[])
    assert empty.actions.shape == (0,) and empty.numeric.shape == (0, enc.n_numeric)
    with pytest.raises(ValueError):
        enc.encode(steps[:2], prev_ts=[None], positions=[0, 1])


def _clicks(n_sessions: int, n_steps: int, seed: int) -> list[IntentStep]:
    """Sessions interleaved at random (in order per session), some long."""
    rng = random.Random(seed)
    left = {i: n_steps * (4 if i % 5 == 0 else 1) for i in range(n_sessions)}
    t = T0
    out = []
    while left:
        i = rng.choice(sorted(left))
        left[i] -= 1
        if not left[i]:
            del left[i]
        t += rng.uniform(0.0, 40.0)
        out.append(
            IntentStep(
                f"c{i % 9}",
                f"s{i}",
                t,
                rng.choice(ACTIONS),
                rng.choice(["shoes", "books", "toys", f"cat-{rng.randrange(50)}"]),
                f"i{rng.randrange(300)}",
                None if rng.random() < 0.3 else round(rng.uniform(0, 300), 2),
                {f: _odd_value(rng) for f in FEATURES if rng.random() < 0.8},
            )
        )
    return out


@pytest.mark.parametrize(("max_batch", "batch"), [(256, 64), (8, 50), (256, 1)])
def test_step_many_equals_the_per_row_path(max_batch: int, batch: int) -> None:
    enc = IntentEncoder(category_buckets=64, item_buckets=512, customer_features=FEATURES)
    torch.manual_seed(3)
    net = IntentNet(enc.n_numeric, category_buckets=64, item_buckets=512, hidden_size=32)
    reference = _ReferenceStepper(net, enc, max_batch)
    b = IntentBatcher(
        net, enc, IntentSettings(device="cpu", max_batch=max_batch, max_sessions=1000)
    )
    steps = _clicks(40, 12 if batch > 1 else 3, seed=batch)
    worst = 0.0
    for lo in range(0, len(steps), batch):  # batches with several steps of one session, too
        chunk = steps[lo : lo + batch]
        got, want = b.step_many(chunk), reference.step_many(chunk)
        for g, w in zip(got, want, strict=True):
            assert list(g) == list(INTENT_LABELS)
            worst = max(worst, *(abs(g[k] - w[k]) for k in INTENT_LABELS))
    assert worst <= 1e-6
    for key, (h, c, last_ts, position) in reference.state.items():
        r = b.slots.row(key)
        assert r is not None
        assert b.slots.last_ts[r] == last_ts and b.slots.position[r] == position
        torch.testing.assert_close(b.slots.h[r], h, rtol=0, atol=1e-6)
        torch.testing.assert_close(b.slots.c[r], c, rtol=0, atol=1e-6)
