"""Purchase propensity: "does this customer buy within H minutes of this click?".

A River ``StandardScaler | LogisticRegression`` (plain SGD) scores the customer's features at
click time. The label is only known later, so every scored click waits in a bounded buffer of
pending examples: a purchase by the same customer within the horizon resolves it as a positive
(``observe_purchase``), and once the caller's event-time watermark passes the horizon it resolves
as a negative (``expire``). Before learning a resolved example, the prediction made at click time
updates the progressive-validation metrics (exact rolling ROC AUC and log loss).

>>> import random
>>> rng = random.Random(7)
>>> model = PropensityModel(horizon_minutes=30.0, learning_rate=0.05)
>>> t = 1_700_000_000.0
>>> for i in range(2_000):
...     carts = rng.randint(0, 3)
...     t += 10.0
...     _ = model.score_click(f"c{i}", f"e{i}", t, {"carts_1h": carts, "clicks_1h": 5})
...     if rng.random() < 0.1 + 0.25 * carts:
...         _ = model.observe_purchase(f"c{i}", t + 60.0)
...     _ = model.expire(t)
>>> _ = model.expire(t + 3_600.0)  # every horizon has closed: all clicks learned
>>> model.n_learned, model.n_pending
(2000, 0)
>>> model.auc > 0.75
True
>>> model.score_click("c9", "e-new", t, {"carts_1h": 3}) > model.score_click(
...     "c9", "e-new2", t, {"carts_1h": 0})
True
"""

from __future__ import annotations

import heapq
import logging
import math
from array import array
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
from river import linear_model, metrics, optim, preprocessing
from river.utils import VectorDict

from models.base import Proba
from models.online.transform import FEATURE_NAMES, model_inputs, model_inputs_matrix
from models.settings import ModelSettings
from models.shared import SharedState, moments_from_sums, power_sums

__all__ = ["PropensityModel"]

logger = logging.getLogger(__name__)

ClickItem = tuple[str, str, float, Mapping[str, float]]
"""``(customer_id, event_id, ts, features)``, as taken by ``score_clicks``."""


def _given(proba: float) -> float:
    """The probability a pending click was given: NaN stands for the untrained model's 0.5
    (no weights, intercept 0)."""
    return 0.5 if math.isnan(proba) else proba


class _Pending(NamedTuple):
    customer_id: str
    ts: float
    proba: float  # the prediction made at click time, for progressive validation
    x: bytes  # model inputs in FEATURE_NAMES order, packed float64: small and fast to pickle


class PropensityModel:
    """Online purchase-propensity model with delayed labels.

    Parameters
    ----------
    horizon_minutes
        A click is a positive when the same customer buys within this many minutes after it.
    learning_rate
        SGD learning rate of the logistic regression weights.
    max_pending
        Most clicks waiting for their label; beyond it the oldest is dropped (``n_dropped``).
        The same number of recent event ids is remembered to ignore replayed clicks.
    auc_window
        Number of most recent resolved labels the exact rolling ROC AUC is computed over.
    """

    def __init__(
        self,
        horizon_minutes: float = 30.0,
        learning_rate: float = 0.05,
        max_pending: int = 200_000,
        auc_window: int = 10_000,
    ) -> None:
        if horizon_minutes <= 0:
            raise ValueError(f"horizon_minutes must be positive, got {horizon_minutes}")
        if max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, got {max_pending}")
        self.horizon_minutes = horizon_minutes
        self.learning_rate = learning_rate
        self.max_pending = max_pending
        self.auc_window = auc_window
        self._horizon_s = horizon_minutes * 60.0
        self._pipeline = preprocessing.StandardScaler() | linear_model.LogisticRegression(
            optimizer=optim.AdaGrad(learning_rate)
        )
        self._scaler: preprocessing.StandardScaler = self._pipeline["StandardScaler"]
        self._logreg: linear_model.LogisticRegression = self._pipeline["LogisticRegression"]
        self._pending: OrderedDict[str, _Pending] = OrderedDict()
        self._by_customer: dict[str, list[str]] = {}
        self._deadlines: list[tuple[float, str]] = []  # min-heap of (ts + horizon, event_id)
        # Clicks already known to be positives; like negatives they are learned when their
        # horizon closes, so every example is learned with the same delay (learning positives
        # at once and negatives 30 min later skews the online model: AUC 0.55 vs 0.69 on the
        # simulator).
        self._positive: set[str] = set()
        self._seen: OrderedDict[str, None] = OrderedDict()
        # River's ROCAUC bins predictions at fixed thresholds on [0, 1], which reads ~0.5-0.8
        # for a well-ranked model whose probabilities all sit below 0.2 (purchases are rare);
        # RollingROCAUC is exact over the window and cheaper per update.
        self._auc = metrics.RollingROCAUC(window_size=auc_window)
        self._log_loss = metrics.LogLoss()
        self._n_learned = 0
        self._n_scored = 0  # labels whose click-time prediction the metrics count
        self._n_dropped = 0
        self._n_duplicates = 0
        self._params: tuple[np.ndarray, np.ndarray, np.ndarray, float] | None = None

    @classmethod
    def from_settings(cls, settings: ModelSettings) -> PropensityModel:
        return cls(
            horizon_minutes=settings.propensity_horizon_minutes,
            learning_rate=settings.propensity_learning_rate,
            max_pending=settings.max_pending_labels,
        )

    # -- the OnlineModel protocol (raw store features in, {False: p0, True: p1} out) ----------

    def learn_one(self, x: Mapping[str, float], y: bool) -> None:
        self._learn(model_inputs(x), bool(y))

    def predict_proba_one(self, x: Mapping[str, float]) -> Proba:
        p = self._proba_one(model_inputs(x))
        return {False: 1.0 - p, True: p}

    def learn_many(self, X: Sequence[Mapping[str, float]], y: Sequence[bool]) -> None:
        if len(X) != len(y):
            raise ValueError(f"X has {len(X)} records but y has {len(y)} labels")
        for x, yi in zip(X, y, strict=True):
            self._learn(model_inputs(x), bool(yi))

    def predict_proba_many(self, X: Sequence[Mapping[str, float]]) -> list[Proba]:
        rows = [list(model_inputs(x).values()) for x in X]
        return [{False: 1.0 - p, True: p} for p in self._proba_rows(rows)]

    # -- delayed labels -----------------------------------------------------------------------

    def score_click(
        self, customer_id: str, event_id: str, ts: float, x: Mapping[str, float]
    ) -> float:
        """Purchase probability for a click; remembers it until its label is known.

        A replayed ``event_id`` is scored again but not stored twice (a still-pending one
        returns the probability it was first given).
        """
        pending = self._pending.get(event_id)
        if pending is not None:
            self._n_duplicates += 1
            return _given(pending.proba)
        inputs = model_inputs(x)
        p = self._proba_one(inputs)
        if event_id in self._seen:
            self._n_duplicates += 1
        else:
            self._remember(customer_id, event_id, ts, p, inputs)
        return p

    def score_clicks(self, items: Sequence[ClickItem]) -> list[float]:
        """``score_click`` for a batch, with one numpy matrix product for all of it.

        Nothing is learned in between, so this equals calling ``score_click`` on each item.
        """
        out = [0.0] * len(items)
        todo: list[int] = []
        rows: list[list[float]] = []
        inputs: list[dict[str, float]] = []
        first: dict[str, int] = {}
        for i, (_, event_id, _, x) in enumerate(items):
            pending = self._pending.get(event_id)
            if pending is not None:
                out[i] = _given(pending.proba)
                self._n_duplicates += 1
                continue
            inp = model_inputs(x)
            todo.append(i)
            inputs.append(inp)
            rows.append(list(inp.values()))
        probas = self._proba_rows(rows)
        for i, inp, p in zip(todo, inputs, probas, strict=True):
            customer_id, event_id, ts, _ = items[i]
            j = first.get(event_id)
            if j is not None:  # repeated inside this batch: same answer as the first one
                out[i] = out[j]
                self._n_duplicates += 1
                continue
            first[event_id] = i
            out[i] = p
            if event_id in self._seen:
                self._n_duplicates += 1
            else:
                self._remember(customer_id, event_id, ts, p, inp)
        return out

    @property
    def trained(self) -> bool:
        """True once the model (this worker's or the deployment's) has learned a label: its
        predictions before that are the prior, 0.5 for every click, and say nothing."""
        return self._n_learned > 0

    def predict_clicks(self, X: Sequence[Mapping[str, float]]) -> list[tuple[float, bytes]]:
        """Purchase probability and packed model inputs of each click, one matrix product,
        remembering nothing: for callers that keep the pending labels themselves
        (``models.online.labels``) and hand them back to ``learn_label``."""
        inputs = model_inputs_matrix(X)
        probas = self._proba_rows(inputs)
        return list(zip(probas, map(np.ndarray.tobytes, inputs), strict=True))

    def learn_label(self, x: bytes, proba: float, y: bool) -> None:
        """Learn a resolved click from its packed inputs (``predict_clicks``); ``proba``, the
        prediction made at click time, updates the progressive-validation metrics first,
        unless it is NaN: the caller's mark for a prediction made before any learning."""
        self._resolve(_Pending("", 0.0, proba, x), y)

    def contributions(self, x: Mapping[str, float], k: int = 3) -> list[tuple[str, float]]:
        """The ``k`` inputs that raise the logit most: weight x standardized input, > 0."""
        inputs = model_inputs(x)
        scaler, weights = self._scaler, self._logreg.weights
        out = []
        for name, value in inputs.items():
            w = weights.get(name, 0.0)
            var = scaler.vars.get(name, 0.0)
            if w and var > 0.0:
                c = w * (value - scaler.means.get(name, 0.0)) / var**0.5
                if c > 0.0:
                    out.append((name, c))
        out.sort(key=lambda t: -t[1])
        return out[:k]

    def observe_purchase(self, customer_id: str, ts: float) -> int:
        """Mark as positives the customer's pending clicks in ``[ts - horizon, ts]``; like
        negatives, they are learned when their horizon closes (``expire``)."""
        ids = self._by_customer.get(customer_id)
        if not ids:
            return 0
        keep: list[str] = []
        n = 0
        for event_id in ids:
            pending = self._pending[event_id]
            if pending.ts <= ts <= pending.ts + self._horizon_s:
                self._positive.add(event_id)
                n += 1
            else:
                keep.append(event_id)
        if keep:
            self._by_customer[customer_id] = keep
        else:
            del self._by_customer[customer_id]
        return n

    def expire(self, now_ts: float) -> int:
        """Learn the clicks whose horizon ends at or before ``now_ts``; returns the negatives.

        ``now_ts`` is an event-time watermark: every purchase with ``ts <= now_ts`` must already
        have been passed to ``observe_purchase``.
        """
        heap = self._deadlines
        n = 0
        while heap and heap[0][0] <= now_ts:
            deadline, event_id = heapq.heappop(heap)
            pending = self._pending.get(event_id)
            if pending is None or pending.ts + self._horizon_s != deadline:
                continue  # resolved or dropped already
            del self._pending[event_id]
            self._unindex(pending.customer_id, event_id)
            positive = event_id in self._positive
            self._positive.discard(event_id)
            self._resolve(pending, positive)
            n += not positive
        return n

    # -- progress -----------------------------------------------------------------------------

    @property
    def auc(self) -> float:
        """Exact ROC AUC of click-time predictions over the last ``auc_window`` labels."""
        return float(self._auc.get())

    @property
    def n_scored(self) -> int:
        """Labels in ``auc`` and ``log_loss``: those predicted after the model had learned."""
        return self._n_scored

    @property
    def log_loss(self) -> float:
        """Mean log loss of click-time predictions over every resolved label."""
        return float(self._log_loss.get())

    @property
    def n_learned(self) -> int:
        return self._n_learned

    @property
    def n_pending(self) -> int:
        return len(self._pending) - len(self._positive)

    @property
    def n_dropped(self) -> int:
        """Pending clicks dropped unlabeled because ``max_pending`` was reached."""
        return self._n_dropped

    @property
    def n_duplicates(self) -> int:
        """Replayed clicks (an event id already seen) that were not stored again."""
        return self._n_duplicates

    def shared_state(self) -> SharedState:
        """The scaler as power sums and AdaGrad's squared gradients (both merge exactly), the
        weights and intercept (summed updates), and the count of labels learned."""
        scaler, logreg = self._scaler, self._logreg
        names = FEATURE_NAMES
        count = float(max((scaler.counts.get(f, 0) for f in names), default=0))
        state = power_sums(
            "propensity.scaler",
            count,
            np.array([scaler.means.get(f, 0.0) for f in names]),
            np.array([scaler.vars.get(f, 0.0) for f in names]),
        )
        weights = logreg._weights
        g2 = logreg.optimizer.g2
        state["propensity.w"] = np.array([weights.get(f, 0.0) for f in names])
        state["propensity.g2"] = np.array([g2.get(f, 0.0) for f in names])
        state["propensity.intercept"] = float(logreg.intercept)
        state["propensity.steps"] = float(logreg.optimizer.n_iterations)
        state["propensity.n_learned"] = float(self._n_learned)
        return state

    def load_shared_state(self, state: Mapping[str, Any]) -> None:
        scaler, logreg = self._scaler, self._logreg
        names = FEATURE_NAMES
        n, mean, var = moments_from_sums(state, "propensity.scaler", len(names))
        if n > 0:
            scaler.counts = Counter(dict.fromkeys(names, round(n)))
            scaler.means = defaultdict(float, zip(names, mean.tolist(), strict=True))
            scaler.vars = defaultdict(float, zip(names, var.tolist(), strict=True))
        w = state.get("propensity.w")
        if w is not None:
            logreg._weights = VectorDict(dict(zip(names, np.asarray(w).tolist(), strict=True)))
        g2 = state.get("propensity.g2")
        if g2 is not None:
            logreg.optimizer.g2 = defaultdict(
                float, zip(names, np.asarray(g2).tolist(), strict=True)
            )
        logreg.intercept = float(state.get("propensity.intercept", logreg.intercept))
        logreg.optimizer.n_iterations = round(float(state.get("propensity.steps", 0.0)))
        self._n_learned = round(float(state.get("propensity.n_learned", 0.0)))
        self._params = None

    # -- internals ----------------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        # Pending clicks go out as columns: 10x faster to pickle than 10^5 small tuples. The
        # customer index and the deadline heap are rebuilt from them on load.
        state = self.__dict__.copy()
        pending = state.pop("_pending")
        values = pending.values()
        state["_pending"] = (
            list(pending),
            [p.customer_id for p in values],
            array("d", [p.ts for p in values]).tobytes(),
            array("d", [p.proba for p in values]).tobytes(),
            b"".join(p.x for p in values),
        )
        state["_seen"] = list(self._seen)
        for name in ("_by_customer", "_deadlines", "_params"):
            del state[name]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        event_ids, customers, ts, probas, xs = state.pop("_pending")
        self.__dict__.update(state)
        self.__dict__.setdefault("_positive", set())
        # checkpoints from before n_scored: their metrics counted every label
        self.__dict__.setdefault("_n_scored", self._n_learned)
        self._seen = OrderedDict.fromkeys(state["_seen"])
        self._params = None
        width = len(FEATURE_NAMES) * array("d").itemsize
        self._pending = OrderedDict()
        self._by_customer = {}
        for i, (event_id, customer_id, t, p) in enumerate(
            zip(event_ids, customers, array("d", ts), array("d", probas), strict=True)
        ):
            self._pending[event_id] = _Pending(customer_id, t, p, xs[i * width : (i + 1) * width])
            self._by_customer.setdefault(customer_id, []).append(event_id)
        self._compact_deadlines()

    def _learn(self, inputs: dict[str, float], y: bool) -> None:
        self._pipeline.learn_one(inputs, y)
        self._n_learned += 1
        self._params = None

    def _proba_one(self, inputs: dict[str, float]) -> float:
        return float(self._pipeline.predict_proba_one(inputs)[True])

    def _proba_rows(self, rows: list[list[float]] | np.ndarray) -> list[float]:
        """River's scaler + logistic regression on a matrix, without pandas."""
        if len(rows) == 0:
            return []
        if self._params is None:
            scaler, logreg = self._scaler, self._logreg
            means = np.array([scaler.means.get(f, 0.0) for f in FEATURE_NAMES])
            var = np.array([scaler.vars.get(f, 0.0) for f in FEATURE_NAMES])
            weights = logreg.weights
            w = np.array([weights.get(f, 0.0) for f in FEATURE_NAMES])
            self._params = (means, np.sqrt(var), w, float(logreg.intercept))
        means, std, w, intercept = self._params
        X = np.asarray(rows, dtype=np.float64)
        scaled = np.divide(X - means, std, out=np.zeros_like(X), where=std > 0)
        logit = scaled @ w + intercept
        # river.utils.math.sigmoid saturates outside [-30, 30]
        p = 1.0 / (1.0 + np.exp(-np.clip(logit, -30.0, 30.0)))
        p = np.where(logit < -30.0, 0.0, np.where(logit > 30.0, 1.0, p))
        return p.tolist()

    def _remember(
        self, customer_id: str, event_id: str, ts: float, p: float, inputs: dict[str, float]
    ) -> None:
        if len(self._pending) >= self.max_pending:
            old_id, old = self._pending.popitem(last=False)
            self._positive.discard(old_id)
            self._unindex(old.customer_id, old_id)
            self._n_dropped += 1
            if self._n_dropped == 1 or self._n_dropped % 10_000 == 0:
                logger.warning(
                    "propensity: %s pending clicks dropped unlabeled (max_pending=%s)",
                    self._n_dropped,
                    self.max_pending,
                )
        # NaN marks a prediction made before any learning: left out of the metrics
        self._pending[event_id] = _Pending(
            customer_id, ts, p if self.trained else math.nan, array("d", inputs.values()).tobytes()
        )
        self._by_customer.setdefault(customer_id, []).append(event_id)
        heapq.heappush(self._deadlines, (ts + self._horizon_s, event_id))
        self._seen[event_id] = None
        if len(self._seen) > self.max_pending:
            self._seen.popitem(last=False)
        if len(self._deadlines) > 2 * len(self._pending) + 1_024:
            self._compact_deadlines()

    def _compact_deadlines(self) -> None:
        """Drop heap entries of resolved or dropped clicks."""
        horizon = self._horizon_s
        self._deadlines = [(p.ts + horizon, eid) for eid, p in self._pending.items()]
        heapq.heapify(self._deadlines)

    def _unindex(self, customer_id: str, event_id: str) -> None:
        ids = self._by_customer.get(customer_id)
        if ids is None:
            return
        try:
            ids.remove(event_id)
        except ValueError:
            return
        if not ids:
            del self._by_customer[customer_id]

    def _resolve(self, pending: _Pending, y: bool) -> None:
        if pending.proba == pending.proba:  # not NaN: a prediction of a model that had learned
            self._auc.update(y, pending.proba)
            self._log_loss.update(y, pending.proba)
            self._n_scored += 1
        self._learn(dict(zip(FEATURE_NAMES, array("d", pending.x), strict=True)), y)
