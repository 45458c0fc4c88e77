"""Benchmark: session-purchase ROC AUC of the intent LSTM vs. the River propensity model.

Both score the same held-out clicks (the sessions that start in the last ``--holdout`` of the
simulated time); a click's label is whether its session ended in a purchase.

* LSTM: ``models.intent.train`` on the events file (train on sessions that ended before the
  time cutoff), then the per-click intent ``purchase`` on the held-out sessions (stepping the
  sessions in order, exactly what serving emits).
* River: ``PropensityModel`` run progressively over *all* events in time order (predict at
  click time, learn when its own label resolves), fed by the real ``FeatureStore`` on an
  embedded Valkey, as in the service. Its click-time scores on the held-out clicks are used.

    python -m benchmarks.intent_vs_propensity                 # 200k events, 2000 customers
    python -m benchmarks.intent_vs_propensity --events 20000 --epochs 2   # quick

Writes ``intent_vs_propensity.json`` and ``.png`` (ROC curves) under ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import torch

from features.events import InvalidEvent, parse_event
from features.settings import RedisSettings
from features.store import FeatureStore
from models.intent.train import (
    evaluate,
    load_checkpoint,
    load_sessions,
    predict_sessions,
    roc_auc,
    time_split,
    train_intent,
)
from models.online.propensity import PropensityModel
from models.settings import IntentSettings
from streams.embedded import EmbeddedValkey
from streams.simulator import Simulator

__all__ = ["main"]

logger = logging.getLogger(__name__)


def write_events(path: Path, n: int, customers: int, seed: int, rate: float) -> None:
    sim = Simulator(customers, seed=seed, start_ts=1_700_000_000.0)
    with path.open("wb") as fh:
        for e in sim.events(n, rate=rate):
            if e.doc is not None:
                fh.write(orjson.dumps({"topic": e.topic, "doc": e.doc}) + b"\n")


async def river_scores(
    path: Path, redis_url: str, batch: int = 500
) -> tuple[dict[str, float], float]:
    """Click-time propensity per click ``event_id`` (progressive), and River's own AUC."""
    store = FeatureStore(RedisSettings(url=redis_url, key_prefix=f"bench{int(time.time())}"))
    await store.start()
    model = PropensityModel()
    scores: dict[str, float] = {}
    events = []
    with path.open("rb") as fh:
        for line in fh:
            obj = orjson.loads(line)
            try:
                events.append(parse_event(obj["topic"], orjson.dumps(obj["doc"]), now=4e9))
            except InvalidEvent:
                continue
    try:
        for lo in range(0, len(events), batch):
            chunk = events[lo : lo + batch]
            results = await store.apply(chunk)
            items = [
                (e.customer_id, e.event_id, e.ts, r.features)
                for e, r in zip(chunk, results, strict=True)
                if e.kind == "click" and not r.duplicate
            ]
            for (_, event_id, _, _), p in zip(items, model.score_clicks(items), strict=True):
                scores[event_id] = p
            for e in chunk:
                if e.kind == "purchase":
                    model.observe_purchase(e.customer_id, e.ts)
            model.expire(chunk[-1].ts)
    finally:
        await store.close()
    return scores, model.auc


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    events_path = args.out / "intent_vs_propensity.events.jsonl"
    t0 = time.perf_counter()
    write_events(events_path, args.events, args.customers, args.seed, args.rate)
    settings = IntentSettings()
    trained = train_intent(
        events_path,
        args.out / "intent_ckpt",
        epochs=args.epochs,
        seed=args.seed,
        settings=settings,
        holdout=args.holdout,
    )
    t_train = time.perf_counter() - t0
    loaded = load_checkpoint(trained.checkpoint)
    sessions = load_sessions(events_path)
    _, test, cutoff = time_split(sessions, args.holdout)
    preds = predict_sessions(loaded.net, loaded.encoder, test)
    # Held-out clicks by event id: re-read the file to map (session, position) -> event_id.
    ids: dict[tuple[str, str], list[str]] = {}
    with events_path.open("rb") as fh:
        for line in fh:
            obj = orjson.loads(line)
            if obj["topic"] == "clicks":
                d = obj["doc"]
                ids.setdefault((d["customer_id"], d["session_id"]), []).append(d["event_id"])
    with EmbeddedValkey() as valkey:
        river, river_own_auc = asyncio.run(river_scores(events_path, valkey.url))
    y, p_lstm, p_river = [], [], []
    for s, p in zip(test, preds, strict=True):
        for event_id, probs in zip(ids[s.key], p, strict=False):
            if event_id in river:
                y.append(s.label == "purchase")
                p_lstm.append(float(probs[0]))
                p_river.append(river[event_id])
    result = {
        "events": args.events,
        "customers": args.customers,
        "seed": args.seed,
        "epochs": args.epochs,
        "holdout": args.holdout,
        "rate": args.rate,
        "time_cutoff": cutoff,
        "train_sessions": trained.train_sessions,
        "test_sessions": len(test),
        "heldout_clicks": len(y),
        "heldout_purchase_rate": float(np.mean(y)) if y else float("nan"),
        "lstm_purchase_auc": roc_auc(y, p_lstm),
        "river_propensity_auc": roc_auc(y, p_river),
        "lstm_metrics": evaluate(loaded.net, loaded.encoder, test),
        "river_rolling_auc_own_label": river_own_auc,
        "checkpoint": str(trained.checkpoint),
        "seconds": time.perf_counter() - t0,
        "train_seconds": t_train,
    }
    (args.out / "intent_vs_propensity.json").write_text(json.dumps(result, indent=2))
    _plot(
        np.array(y),
        np.array(p_lstm),
        np.array(p_river),
        result,
        args.out / "intent_vs_propensity.png",
    )
    return result


def _roc(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-s)
    y = y[order].astype(float)
    tpr = np.concatenate([[0], np.cumsum(y) / max(1, y.sum())])
    fpr = np.concatenate([[0], np.cumsum(1 - y) / max(1, (1 - y).sum())])
    return fpr, tpr


def _plot(y: np.ndarray, a: np.ndarray, b: np.ndarray, result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    for s, label in (
        (a, f"intent LSTM (AUC {result['lstm_purchase_auc']:.3f})"),
        (b, f"River propensity (AUC {result['river_propensity_auc']:.3f})"),
    ):
        fpr, tpr = _roc(y, s)
        ax.plot(fpr, tpr, label=label)
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(
        xlabel="false positive rate",
        ylabel="true positive rate",
        title=f"session ends in purchase, {result['heldout_clicks']} held-out clicks",
    )
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--customers", type=int, default=2_000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--holdout", type=float, default=0.2)
    # Events per simulated second: 2/s spreads 200k events over ~28 h, so River's 30-min
    # label horizon resolves (at 100/s the whole run would fit in one horizon).
    parser.add_argument("--rate", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    r = run(args)
    sys.stdout.write(
        f"held-out clicks: {r['heldout_clicks']} (purchase rate {r['heldout_purchase_rate']:.3f}), "
        f"train sessions {r['train_sessions']}, test sessions {r['test_sessions']}\n"
        f"{'model':<22} {'session-purchase AUC':>21}\n"
        f"{'intent LSTM':<22} {r['lstm_purchase_auc']:>21.4f}\n"
        f"{'River propensity':<22} {r['river_propensity_auc']:>21.4f}\n"
        f"(River's rolling AUC on its own 30-min label: {r['river_rolling_auc_own_label']:.4f}; "
        f"LSTM accuracy {r['lstm_metrics']['accuracy']:.3f}, log loss "
        f"{r['lstm_metrics']['log_loss']:.3f})\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
