"""The session-intent LSTM and the encoding of a click into its input features.

One click of a session is one ``IntentStep``. The ``IntentEncoder`` turns steps into tensors:
a learned embedding of ``action``, hashed embeddings of ``category`` and ``item_id`` (stable
CRC32 hashing, so any process maps a value to the same bucket), and numeric features: log
price, seconds since the previous event in the session, position in the session and a few
customer features passed in as a dict (names fixed by the encoder; missing ones are 0).
The ``IntentNet`` advances a session's ``(h, c)`` by one step per click and returns, per step,
a distribution over how the session will end (``INTENT_LABELS``).

>>> import torch
>>> torch.manual_seed(0) and None
>>> enc = IntentEncoder(customer_features=("prior_orders",))
>>> net = IntentNet(n_numeric=enc.n_numeric, hidden_size=8)
>>> step = IntentStep("c1", "s1", 1_700_000_000.0, "view", "shoes", "i9", 59.0,
...                   {"prior_orders": 2.0})
>>> batch = enc.encode([step], prev_ts=[None], positions=[0])
>>> h = c = torch.zeros(1, 8)
>>> logits, h, c = net.step(batch, h, c)
>>> tuple(logits.shape), round(float(torch.softmax(logits, -1).sum().detach()), 4)
((1, 3), 1.0)
>>> session_label(["view", "add_to_cart"], purchased=False)
'abandon'
"""

from __future__ import annotations

import functools
import math
import operator
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from features.events import ACTIONS, Click

__all__ = [
    "ACTION_VOCAB",
    "INTENT_LABELS",
    "EncodedSteps",
    "IntentEncoder",
    "IntentNet",
    "IntentStep",
    "SessionKey",
    "resolve_device",
    "session_label",
]

INTENT_LABELS: Final = ("purchase", "abandon", "browse")
# Index 0 is "unknown action"; the vocabulary is frozen here so checkpoints stay comparable.
ACTION_VOCAB: Final = ("view", "search", "add_to_cart", "remove_from_cart", "checkout_start")
_ACTION_INDEX: Final = {a: i + 1 for i, a in enumerate(ACTION_VOCAB)}
_BASE_NUMERIC: Final = ("log_price", "has_price", "log_secs_since_prev", "is_first", "log_position")

SessionKey = tuple[str, str]  # (customer_id, session_id)

if set(ACTION_VOCAB) != set(ACTIONS):  # pragma: no cover - guards the contract at import
    raise ImportError("ACTION_VOCAB is out of sync with features.events.ACTIONS")


@dataclass(frozen=True, slots=True)
class IntentStep:
    """The raw inputs of one click, as the intent model sees them."""

    customer_id: str
    session_id: str
    ts: float
    action: str
    category: str
    item_id: str
    price: float | None = None
    customer: Mapping[str, float] = field(default_factory=dict, hash=False)

    @property
    def session_key(self) -> SessionKey:
        return (self.customer_id, self.session_id)

    @classmethod
    def from_click(cls, click: Click, customer: Mapping[str, float] | None = None) -> IntentStep:
        return cls(
            customer_id=click.customer_id,
            session_id=click.session_id,
            ts=click.ts,
            action=click.action,
            category=click.category,
            item_id=click.item_id,
            price=click.price,
            customer=dict(customer or {}),
        )

    def to_record(self) -> list[Any]:
        """A compact JSON-able form for the Redis session log (ids are in the key)."""
        return [self.ts, self.action, self.category, self.item_id, self.price, dict(self.customer)]

    @classmethod
    def from_record(cls, key: SessionKey, record: Sequence[Any]) -> IntentStep:
        ts, action, category, item_id, price, customer = record
        return cls(key[0], key[1], float(ts), action, category, item_id, price, customer or {})


@dataclass(frozen=True, slots=True)
class EncodedSteps:
    """A batch of encoded steps: index tensors ``[B]`` and numeric features ``[B, F]``."""

    actions: torch.Tensor
    categories: torch.Tensor
    items: torch.Tensor
    numeric: torch.Tensor

    def to(self, device: torch.device | str) -> EncodedSteps:
        return EncodedSteps(
            self.actions.to(device, non_blocking=True),
            self.categories.to(device, non_blocking=True),
            self.items.to(device, non_blocking=True),
            self.numeric.to(device, non_blocking=True),
        )


# The fields a batch is encoded from, read in one call per step.
_STEP_FIELDS: Final = operator.attrgetter(
    "ts", "action", "category", "item_id", "price", "customer"
)
_MEMO_SIZE: Final = 1 << 16


# Up to this many steps, ``encode_arrays`` goes step by step (measured: the loop is faster
# than numpy's fixed cost per call below about 20 steps).
_ROW_BY_ROW_MAX: Final = 16


def _signed_log1p(v: float | None) -> float:
    """A customer feature: sign * log1p(|v|); missing or not finite -> 0."""
    if v is None:
        return 0.0
    x = float(v)
    return math.copysign(math.log1p(abs(x)), x) if math.isfinite(x) else 0.0


def _unknown_action(action: str) -> int:
    return 0  # not kept in the memo: any string may come in as an action


class _Memo(dict[str, int]):
    """``value -> id``, computing (and keeping) missing ones: ``map(memo.__getitem__, values)``
    looks a whole column up at C speed. Cleared when it outgrows ``_MEMO_SIZE``."""

    def __init__(self, compute: Callable[[str], int], *, keep: bool = True) -> None:
        super().__init__()
        self.compute = compute
        self.keep = keep

    def __missing__(self, value: str) -> int:
        out = self.compute(value)
        if self.keep:
            if len(self) >= _MEMO_SIZE:
                self.clear()
            self[value] = out
        return out


class IntentEncoder:
    """Feature layout and vocabulary hashing; ``layout()`` is what a checkpoint records."""

    def __init__(
        self,
        *,
        category_buckets: int = 1024,
        item_buckets: int = 4096,
        customer_features: Sequence[str] = (),
        hash_salt: str = "ss-intent-v1",
    ) -> None:
        if category_buckets < 2 or item_buckets < 2:
            raise ValueError("hash buckets must be >= 2 (bucket 0 is reserved)")
        self.category_buckets = category_buckets
        self.item_buckets = item_buckets
        self.customer_features = tuple(customer_features)
        self.hash_salt = hash_salt
        self._seed = zlib.crc32(hash_salt.encode())
        # Ids repeat a lot (hot items, few categories): memoize their buckets.
        self._action_ids = _Memo(_unknown_action, keep=False)
        self._action_ids.update(_ACTION_INDEX)
        self._category_ids = _Memo(functools.partial(self.bucket, buckets=category_buckets))
        self._item_ids = _Memo(functools.partial(self.bucket, buckets=item_buckets))
        # The columns of ``numeric_names`` that are a log1p: all but has_price and is_first.
        self._log_columns = np.array([0, 2, 4, *range(5, self.n_numeric)])

    @property
    def numeric_names(self) -> tuple[str, ...]:
        return _BASE_NUMERIC + tuple(f"customer.{n}" for n in self.customer_features)

    @property
    def n_numeric(self) -> int:
        return len(_BASE_NUMERIC) + len(self.customer_features)

    def bucket(self, value: str, buckets: int) -> int:
        """Stable hash of ``value`` into ``1..buckets-1`` (0 is padding/unknown)."""
        return zlib.crc32(value.encode(), self._seed) % (buckets - 1) + 1

    def encode(
        self,
        steps: Sequence[IntentStep],
        *,
        prev_ts: Sequence[float | None] | np.ndarray,
        positions: Sequence[int] | np.ndarray,
    ) -> EncodedSteps:
        """Encode a batch of steps (one per session) given each session's running state."""
        ids, numeric, _ = self.encode_arrays(steps, prev_ts=prev_ts, positions=positions)
        idx = torch.from_numpy(ids)
        return EncodedSteps(idx[0], idx[1], idx[2], torch.from_numpy(numeric))

    def encode_arrays(
        self,
        steps: Sequence[IntentStep],
        *,
        prev_ts: Sequence[float | None] | np.ndarray,
        positions: Sequence[int] | np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``encode`` as numpy arrays, the whole batch at once (no work per step but reading
        its fields and looking its ids up): ids ``[3, B]`` int64 (action, category, item),
        numeric ``[B, F]`` float32, and the steps' times ``[B]`` float64 (the sessions' next
        ``prev_ts``). A ``prev_ts`` of None or NaN marks a session's first step.
        """
        n = len(steps)
        prev = np.asarray(prev_ts, dtype=np.float64)  # None -> NaN
        pos = np.asarray(positions, dtype=np.float64)
        if prev.shape != (n,) or pos.shape != (n,):
            raise ValueError(f"{n} steps need {n} prev_ts and {n} positions")
        if n <= _ROW_BY_ROW_MAX:
            return self._encode_rows(steps, prev, pos)
        ts, actions, categories, items, prices, customers = zip(
            *map(_STEP_FIELDS, steps), strict=True
        )
        ids = np.array(
            [
                list(map(self._action_ids.__getitem__, actions)),
                list(map(self._category_ids.__getitem__, categories)),
                list(map(self._item_ids.__getitem__, items)),
            ],
            dtype=np.int64,
        )
        # ts, price and the customer features as one float array (None -> NaN).
        raw = np.array(
            [ts, prices, *([c.get(f) for c in customers] for f in self.customer_features)],
            dtype=np.float64,
        )
        customer = raw[2:]
        customer[~np.isfinite(customer)] = 0.0  # missing or not finite -> 0
        # The log1p columns, one row each: price, dt, position, |customer features|.
        logs = np.empty((3 + len(self.customer_features), n), dtype=np.float64)
        logs[0] = raw[1]
        np.subtract(raw[0], prev, out=logs[1])
        np.fmax(logs[:2], 0.0, out=logs[:2])  # no price, price <= 0, a first step -> 0
        logs[2] = pos
        np.abs(customer, out=logs[3:])
        np.log1p(logs, out=logs)
        np.copysign(logs[3:], customer, out=logs[3:])
        numeric = np.empty((n, self.n_numeric), dtype=np.float32)
        numeric[:, self._log_columns] = logs.T
        no_price = np.isnan(raw[1])
        if prices.count(None) != np.count_nonzero(no_price):  # a NaN price is still a price
            no_price = np.array([p is None for p in prices])
        np.logical_not(no_price, out=numeric[:, 1])  # has_price
        np.equal(pos, 0, out=numeric[:, 3])  # is_first
        return ids, numeric, raw[0]

    def _encode_rows(
        self, steps: Sequence[IntentStep], prev: np.ndarray, pos: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``encode_arrays`` step by step: on a few steps, numpy's cost per call is more than
        the whole loop (batch 1: a fifth of the time)."""
        ids: tuple[list[int], list[int], list[int]] = ([], [], [])
        numeric: list[list[float]] = []
        for s, p, k in zip(steps, prev.tolist(), pos.tolist(), strict=True):
            price, dt = s.price, s.ts - p  # NaN for a first step
            row = [
                math.log1p(price) if price is not None and price > 0 else 0.0,
                0.0 if price is None else 1.0,
                math.log1p(dt) if dt > 0 else 0.0,
                1.0 if k == 0 else 0.0,
                math.log1p(k),
            ]
            row += [_signed_log1p(s.customer.get(f)) for f in self.customer_features]
            numeric.append(row)
            ids[0].append(self._action_ids[s.action])
            ids[1].append(self._category_ids[s.category])
            ids[2].append(self._item_ids[s.item_id])
        return (
            np.array(ids, dtype=np.int64).reshape(3, len(numeric)),
            np.array(numeric, dtype=np.float32).reshape(len(numeric), self.n_numeric),
            np.array([s.ts for s in steps], dtype=np.float64),
        )

    def encode_session(self, steps: Sequence[IntentStep]) -> EncodedSteps:
        """Encode one whole session in order (``[T]`` and ``[T, F]``), for training."""
        prev: list[float | None] = [None, *(s.ts for s in steps[:-1])]
        return self.encode(steps, prev_ts=prev, positions=range(len(steps)))

    def layout(self) -> dict[str, Any]:
        return {
            "actions": list(ACTION_VOCAB),
            "category_buckets": self.category_buckets,
            "item_buckets": self.item_buckets,
            "customer_features": list(self.customer_features),
            "numeric": list(self.numeric_names),
            "hash": "crc32(value, crc32(salt)) % (buckets - 1) + 1",
            "hash_salt": self.hash_salt,
            "labels": list(INTENT_LABELS),
        }

    @classmethod
    def from_layout(cls, layout: Mapping[str, Any]) -> IntentEncoder:
        if list(layout.get("actions", [])) != list(ACTION_VOCAB):
            raise ValueError("checkpoint action vocabulary differs from this code's")
        if list(layout.get("labels", [])) != list(INTENT_LABELS):
            raise ValueError("checkpoint labels differ from this code's")
        return cls(
            category_buckets=int(layout["category_buckets"]),
            item_buckets=int(layout["item_buckets"]),
            customer_features=[str(n) for n in layout["customer_features"]],
            hash_salt=str(layout["hash_salt"]),
        )


class IntentNet(nn.Module):
    """Embeddings + numeric features -> one ``LSTMCell`` -> logits over ``INTENT_LABELS``.

    ``step`` advances a batch of sessions by one click each (serving); ``forward_sequence``
    runs padded whole sessions with the same weights (training, and the benchmark baseline).
    """

    def __init__(
        self,
        n_numeric: int,
        *,
        category_buckets: int = 1024,
        item_buckets: int = 4096,
        action_dim: int = 8,
        category_dim: int = 16,
        item_dim: int = 16,
        hidden_size: int = 64,
    ) -> None:
        super().__init__()
        self.n_numeric = n_numeric
        self.category_buckets = category_buckets
        self.item_buckets = item_buckets
        self.action_dim = action_dim
        self.category_dim = category_dim
        self.item_dim = item_dim
        self.hidden_size = hidden_size
        self.action_emb = nn.Embedding(len(ACTION_VOCAB) + 1, action_dim)
        self.category_emb = nn.Embedding(category_buckets, category_dim)
        self.item_emb = nn.Embedding(item_buckets, item_dim)
        self.input_size = action_dim + category_dim + item_dim + n_numeric
        self.cell = nn.LSTMCell(self.input_size, hidden_size)
        self.head = nn.Linear(hidden_size, len(INTENT_LABELS))

    def hyperparameters(self) -> dict[str, int]:
        return {
            "n_numeric": self.n_numeric,
            "category_buckets": self.category_buckets,
            "item_buckets": self.item_buckets,
            "action_dim": self.action_dim,
            "category_dim": self.category_dim,
            "item_dim": self.item_dim,
            "hidden_size": self.hidden_size,
        }

    @classmethod
    def from_hyperparameters(cls, hp: Mapping[str, Any]) -> IntentNet:
        n_numeric = int(hp["n_numeric"])
        return cls(n_numeric, **{k: int(v) for k, v in hp.items() if k != "n_numeric"})

    def embed(self, x: EncodedSteps) -> torch.Tensor:
        # Functional calls: at batch 1 the per-module call overhead is most of the cost.
        return torch.cat(
            [
                F.embedding(x.actions, self.action_emb.weight),
                F.embedding(x.categories, self.category_emb.weight),
                F.embedding(x.items, self.item_emb.weight),
                x.numeric,
            ],
            dim=-1,
        )

    def step(
        self, x: EncodedSteps, h: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One click per session: returns ``(logits [B, 3], h', c')``."""
        cell = self.cell
        h, c = torch.lstm_cell(
            self.embed(x), (h, c), cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh
        )
        return F.linear(h, self.head.weight, self.head.bias), h, c

    def forward_sequence(self, x: EncodedSteps) -> torch.Tensor:
        """Whole sessions ``[B, T]`` (padding past a session's end is harmless: each step's
        output depends only on earlier steps) -> logits ``[B, T, 3]``."""
        inp = self.embed(x)
        batch, steps = inp.shape[0], inp.shape[1]
        h0 = inp.new_zeros(1, batch, self.hidden_size)
        weights = [self.cell.weight_ih, self.cell.weight_hh, self.cell.bias_ih, self.cell.bias_hh]
        out, _, _ = torch.lstm(inp, (h0, h0), weights, True, 1, 0.0, self.training, False, True)
        return self.head(out.reshape(batch, steps, self.hidden_size))


def session_label(actions: Sequence[str], *, purchased: bool) -> str:
    """How a session ended: ``purchase``; else ``abandon`` if its cart was non-empty; else
    ``browse``. The cart is counted from the clicks (adds minus removes)."""
    if purchased:
        return "purchase"
    cart = 0
    for a in actions:
        if a == "add_to_cart":
            cart += 1
        elif a == "remove_from_cart":
            cart = max(0, cart - 1)
    return "abandon" if cart > 0 else "browse"


def resolve_device(choice: str) -> torch.device:
    """``auto`` picks CUDA when available, else CPU."""
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("intent device 'cuda' requested but CUDA is not available")
    return torch.device(choice)
