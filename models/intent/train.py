"""Training, evaluation, checkpoints and online fine-tuning of the session-intent LSTM.

* ``load_sessions(path)``: a JSON-lines file of events (one ``{"topic": ..., "doc"|"value":
  ...}`` object per line as exported from the topics or written by the simulator, or bare
  event objects) -> labelled sessions. A session's label is what production would see:
  ``purchase`` if a purchase carries its ``session_id``, else ``abandon`` if its cart (adds
  minus removes) is non-empty, else ``browse``. Customer features (``prior_orders``,
  ``prior_spend``, ``prior_sessions``) are computed point-in-time from the same file.
* ``time_split``: train on sessions that ended before the cutoff (the ``1 - holdout`` quantile
  of session start times), evaluate on sessions that started after it.
* ``evaluate``: per click, ROC AUC of ``purchase``, accuracy and log loss against the label of
  the click's session.
* ``save_checkpoint`` / ``load_checkpoint``: weights in safetensors (no pickle) plus a JSON
  metadata file (feature layout, hashing, hyperparameters, metrics, the weights' SHA-256)
  signed with HMAC-SHA256; a missing or wrong signature or hash is refused before loading.
* ``OnlineTrainer``: completed sessions go to a bounded buffer; every N sessions a background
  thread fine-tunes a copy of the serving weights and hot-swaps it in only if it has a lower
  log loss than the serving weights on the most recent sessions.

>>> import torch
>>> torch.manual_seed(0) and None
>>> from models.intent.model import IntentEncoder, IntentNet, IntentStep
>>> enc = IntentEncoder(category_buckets=16, item_buckets=16)
>>> net = IntentNet(enc.n_numeric, category_buckets=16, item_buckets=16, hidden_size=8)
>>> def session(i, actions, label):
...     return Session(("c", f"s{i}"), [IntentStep("c", f"s{i}", 1e9 + i * 100 + t, a, "x", "y")
...                    for t, a in enumerate(actions)], label)
>>> data = [session(i, ["view", "add_to_cart", "checkout_start"], "purchase") if i % 2 else
...         session(i, ["view", "view"], "browse") for i in range(40)]
>>> _ = fit(net, enc, data, epochs=30, learning_rate=0.05, seed=0)
>>> evaluate(net, enc, data)["last_click_purchase_auc"]
1.0
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import logging
import math
import os
import random
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import orjson
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from features.events import Click, InvalidEvent, Purchase, parse_event
from models.intent.batcher import IntentBatcher
from models.intent.model import (
    INTENT_LABELS,
    EncodedSteps,
    IntentEncoder,
    IntentNet,
    IntentStep,
    SessionKey,
    session_label,
)
from models.settings import IntentSettings, ModelSettings

__all__ = [
    "CHECKPOINT_FORMAT",
    "FinetuneResult",
    "LoadedIntent",
    "OnlineTrainer",
    "Session",
    "evaluate",
    "fit",
    "load_checkpoint",
    "load_sessions",
    "roc_auc",
    "save_checkpoint",
    "time_split",
    "train_intent",
    "train_intent_main",
]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT: Final = "streamscore-intent/1"
_LABEL_INDEX: Final = {label: i for i, label in enumerate(INTENT_LABELS)}
_FAR_FUTURE: Final = 4_102_444_800.0  # 2100-01-01: files hold past events


@dataclass(slots=True)
class Session:
    """One finished session: its clicks in order and how it ended."""

    key: SessionKey
    steps: list[IntentStep]
    label: str
    outcome: str | None = None  # the simulator's hidden truth, when the file has it

    @property
    def start_ts(self) -> float:
        return self.steps[0].ts

    @property
    def end_ts(self) -> float:
        return self.steps[-1].ts


# ----------------------------------------------------------------------------- data


def _records(lines: Iterable[bytes]) -> Iterable[tuple[str, dict[str, Any], str | None]]:
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(obj, dict):
            continue
        outcome = obj.get("session_outcome")
        if "topic" in obj and ("doc" in obj or "value" in obj):
            doc = obj.get("doc") if obj.get("doc") is not None else obj.get("value")
            if isinstance(doc, str):
                try:
                    doc = orjson.loads(doc)
                except orjson.JSONDecodeError:
                    continue
            if isinstance(doc, dict):
                yield str(obj["topic"]), doc, outcome
            continue
        if "action" in obj:
            yield "clicks", obj, outcome
        elif "order_id" in obj:
            yield "purchases", obj, outcome


def load_sessions(
    path: str | Path,
    *,
    customer_features: bool = True,
    max_steps: int = 256,
) -> list[Session]:
    """Labelled sessions from an events file, ordered by start time (see module doc)."""
    clicks: list[tuple[Click, str | None]] = []
    purchases: list[Purchase] = []
    bad = 0
    with open(path, "rb") as fh:
        for topic, doc, outcome in _records(fh):
            kind = "clicks" if topic.startswith("click") else topic
            if kind not in ("clicks", "purchases"):
                continue
            try:
                event = parse_event(kind, orjson.dumps(doc), now=_FAR_FUTURE)
            except InvalidEvent:
                bad += 1
                continue
            if isinstance(event, Click):
                clicks.append((event, outcome))
            elif isinstance(event, Purchase):
                purchases.append(event)
    if bad:
        logger.info("skipped %d invalid events in %s", bad, path)
    bought = {(p.customer_id, p.session_id) for p in purchases if p.session_id is not None}
    # Point-in-time customer features: every event in ts order (purchases after clicks on ties).
    timeline: list[tuple[float, int, Any]] = [(c.ts, 0, (c, o)) for c, o in clicks]
    timeline += [(p.ts, 1, p) for p in purchases]
    timeline.sort(key=lambda t: (t[0], t[1]))
    orders: dict[str, float] = {}
    spend: dict[str, float] = {}
    n_sessions: dict[str, float] = {}
    sessions: dict[SessionKey, Session] = {}
    for _, kind, item in timeline:
        if kind == 1:
            orders[item.customer_id] = orders.get(item.customer_id, 0.0) + 1.0
            spend[item.customer_id] = spend.get(item.customer_id, 0.0) + item.total
            continue
        click, outcome = item
        key = (click.customer_id, click.session_id)
        s = sessions.get(key)
        if s is None:
            s = sessions[key] = Session(key, [], "browse", outcome)
            n_sessions[click.customer_id] = n_sessions.get(click.customer_id, 0.0) + 1.0
        if len(s.steps) >= max_steps:
            continue
        cust = (
            {
                "prior_orders": orders.get(click.customer_id, 0.0),
                "prior_spend": spend.get(click.customer_id, 0.0),
                "prior_sessions": n_sessions[click.customer_id] - 1.0,
            }
            if customer_features
            else {}
        )
        s.steps.append(IntentStep.from_click(click, cust))
    out = list(sessions.values())
    for s in out:
        s.label = session_label([st.action for st in s.steps], purchased=s.key in bought)
    out.sort(key=lambda s: s.start_ts)
    return out


def time_split(
    sessions: Sequence[Session], holdout: float = 0.2
) -> tuple[list[Session], list[Session], float]:
    """``(train, test, cutoff)``: train ended before ``cutoff``, test started at/after it."""
    if not sessions:
        return [], [], 0.0
    starts = sorted(s.start_ts for s in sessions)
    cutoff = starts[min(len(starts) - 1, int(len(starts) * (1.0 - holdout)))]
    train = [s for s in sessions if s.end_ts < cutoff]
    test = [s for s in sessions if s.start_ts >= cutoff]
    return train, test, cutoff


# ----------------------------------------------------------------------------- training


@dataclass(slots=True)
class _Encoded:
    x: EncodedSteps  # [T] / [T, F]
    label: int


def _encode_all(encoder: IntentEncoder, sessions: Sequence[Session]) -> list[_Encoded]:
    return [_Encoded(encoder.encode_session(s.steps), _LABEL_INDEX[s.label]) for s in sessions]


def _pad(batch: Sequence[_Encoded]) -> tuple[EncodedSteps, torch.Tensor, torch.Tensor]:
    """Padded ``[B, T]`` inputs, labels ``[B, T]`` (-100 past each end) and lengths ``[B]``."""
    t_max = max(len(e.x.actions) for e in batch)
    n_num = batch[0].x.numeric.shape[-1]
    b = len(batch)
    actions = torch.zeros(b, t_max, dtype=torch.long)
    cats = torch.zeros(b, t_max, dtype=torch.long)
    items = torch.zeros(b, t_max, dtype=torch.long)
    numeric = torch.zeros(b, t_max, n_num)
    labels = torch.full((b, t_max), -100, dtype=torch.long)
    lengths = torch.zeros(b, dtype=torch.long)
    for i, e in enumerate(batch):
        n = len(e.x.actions)
        actions[i, :n] = e.x.actions
        cats[i, :n] = e.x.categories
        items[i, :n] = e.x.items
        numeric[i, :n] = e.x.numeric
        labels[i, :n] = e.label
        lengths[i] = n
    return EncodedSteps(actions, cats, items, numeric), labels, lengths


def fit(
    net: IntentNet,
    encoder: IntentEncoder,
    sessions: Sequence[Session],
    *,
    epochs: int = 5,
    learning_rate: float = 3e-3,
    batch_size: int = 64,
    seed: int = 0,
    weight_decay: float = 1e-5,
) -> list[float]:
    """Train on every click (cross-entropy against its session's label); mean loss per epoch."""
    if not sessions:
        return []
    data = _encode_all(encoder, sessions)
    rng = random.Random(seed)
    torch.manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=learning_rate, weight_decay=weight_decay)
    loss_fn = nn.CrossEntropyLoss(ignore_index=-100)
    # Batches of similar lengths pad little; shuffled within and across length buckets.
    order = sorted(range(len(data)), key=lambda i: len(data[i].x.actions))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    history = []
    net.train()
    for epoch in range(epochs):
        rng.shuffle(batches)
        total, n = 0.0, 0
        for idx in batches:
            x, labels, _ = _pad([data[i] for i in idx])
            logits = net.forward_sequence(x)
            loss = loss_fn(logits.reshape(-1, len(INTENT_LABELS)), labels.reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            total += float(loss.detach()) * len(idx)
            n += len(idx)
        history.append(total / max(1, n))
        logger.info("intent epoch %d/%d: loss %.4f", epoch + 1, epochs, history[-1])
    net.eval()
    return history


def predict_sessions(
    net: IntentNet, encoder: IntentEncoder, sessions: Sequence[Session], *, batch_size: int = 256
) -> list[np.ndarray]:
    """Per session, the ``[T, 3]`` intent after each click (what serving would emit)."""
    data = _encode_all(encoder, sessions)
    out: list[np.ndarray] = []
    was_training = net.training
    net.eval()
    with torch.inference_mode():
        for lo in range(0, len(data), batch_size):
            chunk = data[lo : lo + batch_size]
            x, _, lengths = _pad(chunk)
            probs = torch.softmax(net.forward_sequence(x), dim=-1).numpy()
            out.extend(probs[i, : int(lengths[i])] for i in range(len(chunk)))
    net.train(was_training)
    return out


def roc_auc(y_true: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """Exact ROC AUC (Mann-Whitney U with tied ranks); NaN if only one class is present.

    >>> roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    """
    y = np.asarray(y_true, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def evaluate(
    net: IntentNet, encoder: IntentEncoder, sessions: Sequence[Session]
) -> dict[str, float]:
    """Per-click metrics against each click's session label, and the same at session end."""
    if not sessions:
        return {"clicks": 0.0, "sessions": 0.0}
    preds = predict_sessions(net, encoder, sessions)
    probs = np.concatenate(preds)
    labels = np.concatenate(
        [np.full(len(p), _LABEL_INDEX[s.label]) for s, p in zip(sessions, preds, strict=True)]
    )
    last = np.stack([p[-1] for p in preds])
    last_labels = np.array([_LABEL_INDEX[s.label] for s in sessions])
    eps = 1e-7
    return {
        "clicks": float(len(labels)),
        "sessions": float(len(sessions)),
        "purchase_auc": round(roc_auc(labels == 0, probs[:, 0]), 6),
        "accuracy": round(float((probs.argmax(1) == labels).mean()), 6),
        "log_loss": round(
            float(-np.log(np.clip(probs[np.arange(len(labels)), labels], eps, 1)).mean()), 6
        ),
        "last_click_purchase_auc": round(roc_auc(last_labels == 0, last[:, 0]), 6),
        "last_click_accuracy": round(float((last.argmax(1) == last_labels).mean()), 6),
    }


# ----------------------------------------------------------------------------- checkpoints


@dataclass(frozen=True, slots=True)
class LoadedIntent:
    net: IntentNet
    encoder: IntentEncoder
    metadata: dict[str, Any]

    @property
    def version(self) -> str:
        return str(self.metadata["version"])

    def batcher(self, settings: IntentSettings | None = None, **kwargs: Any) -> IntentBatcher:
        return IntentBatcher(self.net, self.encoder, settings, version=self.version, **kwargs)


def _key_bytes(key: str | bytes | None) -> bytes:
    if key is None:
        key = ModelSettings().checkpoint_key.get_secret_value()
    return key.encode() if isinstance(key, str) else key


def _sign(meta: Mapping[str, Any], key: bytes) -> str:
    body = json.dumps({k: v for k, v in meta.items() if k != "hmac"}, sort_keys=True).encode()
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def save_checkpoint(
    out_dir: str | Path,
    net: IntentNet,
    encoder: IntentEncoder,
    *,
    metrics: Mapping[str, float] | None = None,
    key: str | bytes | None = None,
    version: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``<version>.safetensors`` + ``<version>.json`` and ``latest.json``; return the
    metadata path. The default key is ``ModelSettings().checkpoint_key``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in net.state_dict().items()}
    if version is None:
        version = time.strftime("intent-%Y%m%dT%H%M%SZ", time.gmtime())
        n = 0
        while (out / f"{version}.json").exists():
            n += 1
            version = f"{version.split('.')[0]}.{n}"
    weights = out / f"{version}.safetensors"
    save_file(tensors, str(weights), metadata={"format": CHECKPOINT_FORMAT, "version": version})
    meta: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "version": version,
        "created_at": time.time(),
        "weights_file": weights.name,
        "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
        "hyperparameters": net.hyperparameters(),
        "layout": encoder.layout(),
        "metrics": dict(metrics or {}),
        "torch": torch.__version__,
        **dict(extra or {}),
    }
    meta["hmac"] = _sign(meta, _key_bytes(key))
    path = out / f"{version}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True))
    os.replace(tmp, path)
    latest = out / "latest.json"
    tmp = latest.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"version": version, "metadata": path.name}))
    os.replace(tmp, latest)
    logger.info("saved intent checkpoint %s", path)
    return path


def load_checkpoint(
    path: str | Path, *, key: str | bytes | None = None, device: str = "cpu"
) -> LoadedIntent:
    """Verify (HMAC of the metadata, SHA-256 of the weights) and load; never unpickles.

    ``path``: a ``<version>.json`` or a directory (its ``latest.json`` is followed).
    """
    p = Path(path)
    if p.is_dir():
        pointer = json.loads((p / "latest.json").read_text())
        p = p / Path(str(pointer["metadata"])).name
    meta = json.loads(p.read_text())
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{p} is not a {CHECKPOINT_FORMAT} checkpoint")
    signature = meta.get("hmac")
    if not isinstance(signature, str) or not hmac.compare_digest(
        signature, _sign(meta, _key_bytes(key))
    ):
        raise ValueError(f"{p}: bad or missing signature; refusing to load")
    weights = p.parent / Path(str(meta["weights_file"])).name
    if hashlib.sha256(weights.read_bytes()).hexdigest() != meta["weights_sha256"]:
        raise ValueError(f"{weights}: contents do not match the signed hash; refusing to load")
    encoder = IntentEncoder.from_layout(meta["layout"])
    net = IntentNet.from_hyperparameters(meta["hyperparameters"])
    if net.n_numeric != encoder.n_numeric:
        raise ValueError(f"{p}: network and feature layout disagree")
    net.load_state_dict(load_file(str(weights), device=device))
    net.eval()
    return LoadedIntent(net, encoder, meta)


# ----------------------------------------------------------------------------- online


@dataclass(frozen=True, slots=True)
class FinetuneResult:
    version: str
    swapped: bool
    current_log_loss: float
    candidate_log_loss: float
    train_sessions: int
    eval_sessions: int
    seconds: float


class OnlineTrainer:
    """Fine-tunes the serving model on completed sessions in a background thread.

    ``learn_many(sessions, labels)`` (the ``models.base.BatchModel`` learning side) adds
    completed sessions; every ``finetune_every_sessions`` it starts one fine-tuning run
    unless one is running. The run trains a copy of the serving weights on the older part of
    the buffer and compares it with the serving weights on the newest
    ``finetune_holdout_fraction``; it is hot-swapped in only if its log loss is lower.
    """

    def __init__(
        self,
        batcher: IntentBatcher,
        settings: IntentSettings | None = None,
        *,
        checkpoint_dir: str | Path | None = None,
        key: str | bytes | None = None,
        seed: int = 0,
    ) -> None:
        self.batcher = batcher
        self.settings = settings if settings is not None else batcher.settings
        self.checkpoint_dir = checkpoint_dir
        self.seed = seed
        self.results: list[FinetuneResult] = []
        self._key = key
        self._buffer: deque[Session] = deque(maxlen=self.settings.finetune_buffer_sessions)
        self._since = 0
        self._runs = 0
        self.accepted = 0  # fine-tuning runs swapped in, the deployment's (merged) count
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def learn_many(self, X: Sequence[Sequence[IntentStep]], y: Sequence[str]) -> None:
        if len(X) != len(y):
            raise ValueError(f"{len(X)} sessions but {len(y)} labels")
        with self._lock:
            for steps, label in zip(X, y, strict=True):
                if label not in _LABEL_INDEX:
                    raise ValueError(f"unknown intent label {label!r}")
                if steps:
                    self._buffer.append(Session(steps[0].session_key, list(steps), label))
                    self._since += 1
            due = self._since >= self.settings.finetune_every_sessions
            if due and not self.running:
                self._since = 0
                self._thread = threading.Thread(
                    target=self._run_logged, name="intent-finetune", daemon=True
                )
                self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        t = self._thread
        if t is not None:
            t.join(timeout)

    def _run_logged(self) -> None:
        try:
            self.run_once()
        except Exception:
            logger.exception("intent fine-tuning failed; serving weights unchanged")

    def run_once(self) -> FinetuneResult | None:
        """One fine-tune/compare/swap cycle on the current buffer (synchronous)."""
        with self._lock:
            data = list(self._buffer)
        n_eval = max(1, int(len(data) * self.settings.finetune_holdout_fraction))
        train, recent = data[:-n_eval], data[-n_eval:]
        if not train:
            return None
        t0 = time.perf_counter()
        state = self.batcher.state_dict_copy()
        hp = self.batcher.net.hyperparameters()
        encoder = self.batcher.encoder
        current = IntentNet.from_hyperparameters(hp)
        current.load_state_dict(state)
        candidate = IntentNet.from_hyperparameters(hp)
        candidate.load_state_dict(state)
        self._runs += 1
        fit(
            candidate,
            encoder,
            train,
            epochs=self.settings.finetune_epochs,
            learning_rate=self.settings.finetune_learning_rate,
            seed=self.seed + self._runs,
        )
        cur = evaluate(current, encoder, recent)["log_loss"]
        cand = evaluate(candidate, encoder, recent)["log_loss"]
        swapped = math.isfinite(cand) and cand < cur
        version = self.batcher.version
        if swapped:
            # What this run learned, added to the serving weights as they are now: a merge
            # with the other workers' models (models/shared.py) may have moved them meanwhile.
            tuned = candidate.state_dict()
            serving = self.batcher.state_dict_copy()
            weights = {k: serving[k] + (tuned[k] - state[k]) for k in serving}
            self.accepted += 1
            version = f"{version.split('+')[0]}+ft{self.accepted}"
            self.batcher.swap_weights(weights, version)
            if self.checkpoint_dir is not None:
                candidate.load_state_dict(weights)
                save_checkpoint(
                    self.checkpoint_dir,
                    candidate,
                    encoder,
                    metrics={"recent_log_loss": cand},
                    key=self._key,
                    version=version,
                )
        else:
            logger.info("fine-tuned intent model rejected: log loss %.4f >= %.4f", cand, cur)
        result = FinetuneResult(
            version,
            swapped,
            cur,
            cand,
            len(train),
            len(recent),
            time.perf_counter() - t0,
        )
        self.results.append(result)
        return result


# ----------------------------------------------------------------------------- CLI


@dataclass(slots=True)
class TrainResult:
    checkpoint: Path
    metrics: dict[str, float]
    train_sessions: int
    test_sessions: int
    loss_history: list[float] = field(default_factory=list)


def train_intent(
    events: str | Path,
    out_dir: str | Path,
    *,
    epochs: int = 5,
    seed: int = 0,
    settings: IntentSettings | None = None,
    key: str | bytes | None = None,
    holdout: float = 0.2,
    learning_rate: float = 3e-3,
) -> TrainResult:
    """Load, split by time, train, evaluate on the held-out part, save a checkpoint."""
    settings = settings if settings is not None else IntentSettings()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    sessions = load_sessions(events)
    train, test, cutoff = time_split(sessions, holdout)
    if not train:
        raise ValueError(f"{events}: no complete sessions before the time cutoff")
    encoder = IntentEncoder(
        category_buckets=settings.category_buckets,
        item_buckets=settings.item_buckets,
        customer_features=settings.customer_features,
    )
    net = IntentNet(
        encoder.n_numeric,
        category_buckets=settings.category_buckets,
        item_buckets=settings.item_buckets,
        hidden_size=settings.hidden_size,
    )
    losses = fit(net, encoder, train, epochs=epochs, learning_rate=learning_rate, seed=seed)
    metrics = evaluate(net, encoder, test)
    labels = {lab: sum(s.label == lab for s in train) for lab in INTENT_LABELS}
    path = save_checkpoint(
        out_dir,
        net,
        encoder,
        metrics=metrics,
        key=key,
        extra={
            "training": {
                "events_file": str(events),
                "epochs": epochs,
                "seed": seed,
                "learning_rate": learning_rate,
                "train_sessions": len(train),
                "test_sessions": len(test),
                "time_cutoff": cutoff,
                "train_labels": labels,
                "loss_history": losses,
            }
        },
    )
    return TrainResult(path, metrics, len(train), len(test), losses)


def train_intent_main(argv: list[str] | None = None) -> int:
    """``streamscore train-intent --events FILE --out DIR [--epochs N] [--seed S]``.

    The checkpoint key is ``STREAMSCORE_MODELS__CHECKPOINT_KEY`` (else the dev default).
    Prints one JSON line (checkpoint path and held-out metrics); returns the exit code.
    """
    parser = argparse.ArgumentParser(
        prog="streamscore train-intent", description="Train the session-intent LSTM."
    )
    parser.add_argument("--events", required=True, type=Path, help="JSON-lines events file")
    parser.add_argument("--out", required=True, type=Path, help="checkpoint directory")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--holdout", type=float, default=0.2, help="held-out share (by time)")
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    args = parser.parse_args(argv)
    if not args.events.is_file():
        parser.error(f"no such events file: {args.events}")
    if args.epochs < 1 or not 0.0 < args.holdout < 1.0:
        parser.error("--epochs must be >= 1 and --holdout in (0, 1)")
    key = os.environ.get("STREAMSCORE_MODELS__CHECKPOINT_KEY")
    try:
        result = train_intent(
            args.events,
            args.out,
            epochs=args.epochs,
            seed=args.seed,
            key=key,
            holdout=args.holdout,
            learning_rate=args.learning_rate,
        )
    except (OSError, ValueError) as exc:
        logger.error("train-intent failed: %s", exc)
        sys.stderr.write(f"train-intent: {exc}\n")
        return 1
    sys.stdout.write(
        json.dumps(
            {
                "checkpoint": str(result.checkpoint),
                "train_sessions": result.train_sessions,
                "test_sessions": result.test_sessions,
                "metrics": result.metrics,
            }
        )
        + "\n"
    )
    return 0
