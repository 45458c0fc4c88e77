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
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

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


def _signed_log1p(x: float) -> float:
    if not math.isfinite(x):
        return 0.0
    return math.copysign(math.log1p(abs(x)), x)


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
        self._cached_bucket = functools.lru_cache(maxsize=1 << 16)(self._bucket)

    @property
    def numeric_names(self) -> tuple[str, ...]:
        return _BASE_NUMERIC + tuple(f"customer.{n}" for n in self.customer_features)

    @property
    def n_numeric(self) -> int:
        return len(_BASE_NUMERIC) + len(self.customer_features)

    def bucket(self, value: str, buckets: int) -> int:
        """Stable hash of ``value`` into ``1..buckets-1`` (0 is padding/unknown)."""
        return self._cached_bucket(value, buckets)

    def _bucket(self, value: str, buckets: int) -> int:
        return zlib.crc32(value.encode(), self._seed) % (buckets - 1) + 1

    def encode_row(
        self, step: IntentStep, prev_ts: float | None, position: int
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
        cust = step.customer
        for name in self.customer_features:
            v = cust.get(name)
            numeric.append(0.0 if v is None else _signed_log1p(float(v)))
        bucket = self._cached_bucket
        return (
            _ACTION_INDEX.get(step.action, 0),
            bucket(step.category, self.category_buckets),
            bucket(step.item_id, self.item_buckets),
            numeric,
        )

    def encode(
        self,
        steps: Sequence[IntentStep],
        *,
        prev_ts: Sequence[float | None],
        positions: Sequence[int],
    ) -> EncodedSteps:
        """Encode a batch of steps (one per session) given each session's running state."""
        ids, numeric = self.encode_lists(steps, prev_ts=prev_ts, positions=positions)
        idx = torch.tensor(ids, dtype=torch.long).reshape(len(ids), 3)
        return EncodedSteps(
            idx[:, 0],
            idx[:, 1],
            idx[:, 2],
            torch.tensor(numeric, dtype=torch.float32).reshape(len(ids), self.n_numeric),
        )

    def encode_lists(
        self,
        steps: Sequence[IntentStep],
        *,
        prev_ts: Sequence[float | None],
        positions: Sequence[int],
    ) -> tuple[list[list[int]], list[list[float]]]:
        """``encode`` as plain lists: ``[action, category, item]`` ids and numeric rows."""
        ids: list[list[int]] = []
        numeric: list[list[float]] = []
        for s, p, n in zip(steps, prev_ts, positions, strict=True):
            a, c, i, num = self.encode_row(s, p, n)
            ids.append([a, c, i])
            numeric.append(num)
        return ids, numeric

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
