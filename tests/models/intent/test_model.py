"""The intent LSTM, its encoding, slot table, training, checkpoints and fine-tuning."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import orjson
import pytest
import torch

from models.intent.batcher import IntentBatcher
from models.intent.model import (
    INTENT_LABELS,
    EncodedSteps,
    IntentEncoder,
    IntentNet,
    IntentStep,
    session_label,
)
from models.intent.slots import SlotTable
from models.intent.train import (
    OnlineTrainer,
    Session,
    evaluate,
    fit,
    load_checkpoint,
    load_sessions,
    roc_auc,
    save_checkpoint,
    time_split,
    train_intent_main,
)
from models.settings import IntentSettings

torch.set_num_threads(1)

T0 = 1_700_000_000.0


def make_sessions(n: int, seed: int = 0) -> list[Session]:
    """Sessions whose outcome depends on the ORDER of the same actions."""
    rng = random.Random(seed)
    out = []
    t = T0
    for i in range(n):
        cid, sid = f"c{i % 37}", f"s{i}"
        cat = rng.choice(["shoes", "books", "toys"])
        kind = rng.random()
        if kind < 0.35:  # compare, add, checkout -> purchase
            actions = ["view", "view", "add_to_cart", "checkout_start"]
            label = "purchase"
        elif kind < 0.65:  # add, checkout, remove, drift -> abandon
            actions = ["view", "add_to_cart", "checkout_start", "remove_from_cart", "add_to_cart"]
            label = "abandon"
        else:
            actions = ["search", "view", "view"]
            label = "browse"
        steps = []
        for a in actions:
            t += rng.uniform(1, 20)
            price = None if a in ("search", "checkout_start") else round(rng.uniform(5, 80), 2)
            steps.append(
                IntentStep(
                    cid,
                    sid,
                    t,
                    a,
                    cat,
                    f"i{rng.randrange(30)}",
                    price,
                    {"prior_orders": float(i % 3)},
                )
            )
        out.append(Session((cid, sid), steps, label))
    return out


def small_net(enc: IntentEncoder, seed: int = 0) -> IntentNet:
    torch.manual_seed(seed)
    return IntentNet(
        enc.n_numeric,
        category_buckets=enc.category_buckets,
        item_buckets=enc.item_buckets,
        hidden_size=16,
    )


@pytest.fixture
def enc() -> IntentEncoder:
    return IntentEncoder(category_buckets=32, item_buckets=64, customer_features=("prior_orders",))


def test_hashing_is_stable_and_in_range(enc: IntentEncoder) -> None:
    b = enc.bucket("shoes", 32)
    assert b == enc.bucket("shoes", 32) == IntentEncoder(category_buckets=32).bucket("shoes", 32)
    assert all(1 <= enc.bucket(f"v{i}", 32) < 32 for i in range(200))
    other = IntentEncoder(hash_salt="other")
    assert [other.bucket(f"v{i}", 32) for i in range(20)] != [
        enc.bucket(f"v{i}", 32) for i in range(20)
    ]


def test_encoding_numeric_features(enc: IntentEncoder) -> None:
    a = IntentStep("c", "s", T0, "view", "x", "y", 9.0, {"prior_orders": 3.0, "ignored": 5})
    b = IntentStep("c", "s", T0 + 10, "search", "x", "y", None, {})
    x = enc.encode([a, b], prev_ts=[None, T0], positions=[0, 1])
    assert x.numeric.shape == (2, enc.n_numeric)
    log_price, has_price, dt, first, pos, orders = x.numeric[0].tolist()
    assert (round(log_price, 4), has_price, dt, first, pos) == (
        round(np.log1p(9.0), 4),
        1.0,
        0.0,
        1.0,
        0.0,
    )
    assert round(orders, 4) == round(np.log1p(3.0), 4)
    assert x.numeric[1].tolist()[:5] == pytest.approx([0.0, 0.0, np.log1p(10.0), 0.0, np.log1p(1)])
    assert x.numeric[1, 5] == 0.0  # missing customer feature
    assert x.actions.tolist() == [1, 2]


def test_layout_round_trip(enc: IntentEncoder) -> None:
    again = IntentEncoder.from_layout(json.loads(json.dumps(enc.layout())))
    assert again.layout() == enc.layout()
    bad = dict(enc.layout(), labels=["a", "b", "c"])
    with pytest.raises(ValueError):
        IntentEncoder.from_layout(bad)


def test_stepping_equals_whole_sequence(enc: IntentEncoder) -> None:
    net = small_net(enc).eval()
    s = make_sessions(1)[0]
    x = enc.encode_session(s.steps)
    with torch.inference_mode():
        full = torch.softmax(
            net.forward_sequence(
                EncodedSteps(x.actions[None], x.categories[None], x.items[None], x.numeric[None])
            ),
            -1,
        )[0]
        h = c = torch.zeros(1, 16)
        stepped = []
        for t in range(len(s.steps)):
            xt = EncodedSteps(
                x.actions[t : t + 1],
                x.categories[t : t + 1],
                x.items[t : t + 1],
                x.numeric[t : t + 1],
            )
            logits, h, c = net.step(xt, h, c)
            stepped.append(torch.softmax(logits, -1)[0])
    torch.testing.assert_close(torch.stack(stepped), full, atol=1e-5, rtol=1e-4)


def test_session_label() -> None:
    assert session_label(["view"], purchased=True) == "purchase"
    assert session_label(["add_to_cart", "remove_from_cart"], purchased=False) == "browse"
    assert (
        session_label(["add_to_cart", "add_to_cart", "remove_from_cart"], purchased=False)
        == "abandon"
    )


def test_slot_table_lru_expiry_and_discard() -> None:
    t = SlotTable(3, 4, idle_s=60.0)
    rows, fresh = t.acquire([("a", "1"), ("b", "1"), ("c", "1")])
    assert fresh == [True] * 3 and len(t) == 3
    t.h[rows[0]] = 1.0
    t.touch([("a", "1")])  # a is now most recent: b is evicted next
    (r,), (f,) = t.acquire([("d", "1")])
    assert f and ("b", "1") not in t and ("a", "1") in t and t.evictions == 1
    assert float(t.h[r].abs().sum()) == 0.0 and float(t.h[rows[0]].sum()) == 4.0
    for k, ts in ((("a", "1"), 100.0), (("c", "1"), 10.0), (("d", "1"), 90.0)):
        t.last_ts[t.row(k)] = ts
    assert t.expire(now=120.0) == [("c", "1")]
    assert t.discard(("a", "1")) and not t.discard(("a", "1"))
    assert len(t) == 1 and t.expirations == 1
    _, fresh = t.acquire([("x", "1"), ("y", "1")])
    assert fresh == [True, True] and len(t) == 3


def test_fit_learns_order_and_evaluate(enc: IntentEncoder) -> None:
    sessions = make_sessions(240)
    train, test, cutoff = time_split(sessions, 0.25)
    assert train and test and max(s.end_ts for s in train) < cutoff <= min(s.start_ts for s in test)
    net = small_net(enc)
    losses = fit(net, enc, train, epochs=12, learning_rate=0.02, batch_size=16, seed=1)
    assert losses[-1] < losses[0]
    m = evaluate(net, enc, test)
    assert m["last_click_accuracy"] > 0.9 and m["purchase_auc"] > 0.8
    assert set(m) >= {"purchase_auc", "accuracy", "log_loss"}


def test_roc_auc_matches_pairwise_count() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.random(200), 1)  # plenty of ties
    pos, neg = s[y == 1], s[y == 0]
    pairs = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    assert roc_auc(y, s) == pytest.approx(pairs)


def test_checkpoint_round_trip_and_tamper(tmp_path: Path, enc: IntentEncoder) -> None:
    net = small_net(enc, seed=3)
    path = save_checkpoint(
        tmp_path, net, enc, metrics={"purchase_auc": 0.5}, key="k1", version="v1"
    )
    loaded = load_checkpoint(tmp_path, key="k1")  # directory -> latest.json
    assert loaded.version == "v1" and loaded.metadata["metrics"]["purchase_auc"] == 0.5
    assert loaded.encoder.layout() == enc.layout()
    for k, v in net.state_dict().items():
        torch.testing.assert_close(loaded.net.state_dict()[k], v)
    with pytest.raises(ValueError, match="signature"):
        load_checkpoint(path, key="other")
    meta = json.loads(path.read_text())
    meta["hyperparameters"]["hidden_size"] = 8
    path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="signature"):
        load_checkpoint(path, key="k1")
    save_checkpoint(tmp_path, net, enc, key="k1", version="v2")
    w = tmp_path / "v2.safetensors"
    data = bytearray(w.read_bytes())
    data[-1] ^= 1
    w.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="hash"):
        load_checkpoint(tmp_path / "v2.json", key="k1")


def _write_events(path: Path, sessions: list[Session]) -> None:
    with path.open("wb") as fh:
        n = 0
        for s in sessions:
            for st in s.steps:
                n += 1
                doc = {
                    "event_id": f"e{n}",
                    "customer_id": st.customer_id,
                    "session_id": st.session_id,
                    "ts": st.ts,
                    "action": st.action,
                    "item_id": st.item_id,
                    "category": st.category,
                }
                if st.price is not None:
                    doc["price"] = st.price
                # Alternate the two accepted line formats.
                line = {"topic": "clicks", "doc": doc} if n % 2 else doc
                fh.write(orjson.dumps(line) + b"\n")
            if s.label == "purchase":
                n += 1
                fh.write(
                    orjson.dumps(
                        {
                            "topic": "purchases",
                            "value": orjson.dumps(
                                {
                                    "event_id": f"e{n}",
                                    "customer_id": s.key[0],
                                    "session_id": s.key[1],
                                    "ts": s.end_ts + 2,
                                    "order_id": f"o{n}",
                                    "total": 10.0,
                                    "currency": "EUR",
                                    "items": [{"item_id": "i1", "category": "x", "price": 10.0}],
                                }
                            ).decode(),
                        }
                    )
                    + b"\n"
                )
        fh.write(
            b"not json\n" + orjson.dumps({"topic": "clicks", "doc": {"event_id": "x"}}) + b"\n"
        )


def test_load_sessions_labels_and_customer_features(tmp_path: Path) -> None:
    sessions = make_sessions(30)
    path = tmp_path / "events.jsonl"
    _write_events(path, sessions)
    loaded = load_sessions(path)
    assert [s.key for s in loaded] == [s.key for s in sessions]
    assert [s.label for s in loaded] == [s.label for s in sessions]
    assert all(s.steps[0].customer["prior_sessions"] == 0.0 for s in loaded)  # one each
    again = load_sessions(path.parent / "events.jsonl", customer_features=False)
    assert again[0].steps[0].customer == {}


def test_customer_features_are_point_in_time(tmp_path: Path) -> None:
    sessions = make_sessions(80)  # customers c0..c36 come back: c0 has sessions 0, 37, 74
    path = tmp_path / "events.jsonl"
    _write_events(path, sessions)
    c0 = [s for s in load_sessions(path) if s.key[0] == "c0"]
    assert [s.steps[0].customer["prior_sessions"] for s in c0] == [0.0, 1.0, 2.0]
    bought = [s.label == "purchase" for s in c0]
    assert c0[1].steps[0].customer["prior_orders"] == float(bought[0])
    assert c0[2].steps[0].customer["prior_orders"] == float(bought[0] + bought[1])


def test_train_intent_main(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    _write_events(path, make_sessions(150))
    out = tmp_path / "ckpt"
    rc = train_intent_main(
        ["--events", str(path), "--out", str(out), "--epochs", "2", "--seed", "3"]
    )
    assert rc == 0
    loaded = load_checkpoint(out)
    assert loaded.metadata["training"]["seed"] == 3
    assert {"purchase_auc", "accuracy", "log_loss"} <= set(loaded.metadata["metrics"])


def test_train_intent_main_rejects_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        train_intent_main(["--events", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path)])


def _batcher(enc: IntentEncoder, net: IntentNet, **kw: object) -> IntentBatcher:
    settings = IntentSettings(
        device="cpu",
        max_sessions=500,
        finetune_every_sessions=100,
        finetune_epochs=8,
        finetune_learning_rate=0.02,
        **kw,
    )
    return IntentBatcher(net, enc, settings, version="v0")


def test_online_trainer_swaps_in_a_better_model(tmp_path: Path, enc: IntentEncoder) -> None:
    b = _batcher(enc, small_net(enc))
    trainer = OnlineTrainer(b, checkpoint_dir=tmp_path, key="k")
    sessions = make_sessions(150, seed=5)
    before = b.state_dict_copy()
    trainer.learn_many([s.steps for s in sessions[:99]], [s.label for s in sessions[:99]])
    assert not trainer.running and trainer.buffered == 99
    trainer.learn_many([s.steps for s in sessions[99:]], [s.label for s in sessions[99:]])
    trainer.join(timeout=60)  # started in the background at the 100th session
    (result,) = trainer.results
    assert result.swapped and result.candidate_log_loss < result.current_log_loss
    assert b.version == "v0+ft1" == result.version
    assert load_checkpoint(tmp_path, key="k").version == "v0+ft1"
    after = b.state_dict_copy()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_online_trainer_keeps_a_better_serving_model(enc: IntentEncoder) -> None:
    net = small_net(enc)
    fit(net, enc, make_sessions(200, seed=1), epochs=12, learning_rate=0.02)
    b = _batcher(enc, net)
    trainer = OnlineTrainer(
        b, IntentSettings(finetune_every_sessions=10_000, finetune_learning_rate=5.0)
    )  # wrecks the copy
    sessions = make_sessions(100, seed=9)
    trainer.learn_many([s.steps for s in sessions], [s.label for s in sessions])
    before = b.state_dict_copy()
    result = trainer.run_once()
    assert result is not None and not result.swapped and b.version == "v0"
    assert all(torch.equal(before[k], v) for k, v in b.state_dict_copy().items())
    with pytest.raises(ValueError):
        trainer.learn_many([sessions[0].steps], ["maybe"])


def test_labels_are_the_three_outcomes() -> None:
    assert INTENT_LABELS == ("purchase", "abandon", "browse")
