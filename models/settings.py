"""Settings of the online models, the intent LSTM and the offer decision."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

__all__ = ["DecisionSettings", "IntentSettings", "ModelSettings"]


class ModelSettings(BaseModel):
    """River models: propensity, segments, checkpoints."""

    model_config = ConfigDict(frozen=True)

    # "Buys within H minutes of this click" is the propensity label.
    propensity_horizon_minutes: float = Field(default=30.0, gt=0)
    propensity_learning_rate: float = Field(default=0.05, gt=0)
    n_segments: int = Field(default=6, ge=1)
    checkpoint_dir: Path = Path("var/checkpoints")
    checkpoint_every_s: float = Field(default=60.0, gt=0)
    # HMAC-SHA256 key signing checkpoints; unsigned or tampered files are refused.
    checkpoint_key: SecretStr = SecretStr("streamscore-dev-key-change-me")
    max_pending_labels: int = Field(default=200_000, ge=1)


class IntentSettings(BaseModel):
    """The session-intent LSTM and its micro-batcher."""

    model_config = ConfigDict(frozen=True)

    enabled: bool = True
    device: Literal["auto", "cpu", "cuda"] = "auto"
    max_batch: int = Field(default=256, ge=1)
    max_wait_ms: float = Field(default=2.0, ge=0)
    max_sessions: int = Field(default=100_000, ge=1)
    session_idle_minutes: float = Field(default=30.0, gt=0)
    replay_events: int = Field(default=64, ge=1)
    checkpoint_path: Path | None = None
    finetune_every_sessions: int = Field(default=2_000, ge=1)
    # Capture fixed-size steps as CUDA graphs (only on CUDA; falls back to eager on failure).
    cuda_graphs: bool = True
    # Architecture and encoding of a fresh (untrained) model; a checkpoint carries its own.
    hidden_size: int = Field(default=64, ge=1)
    category_buckets: int = Field(default=1024, ge=2)
    item_buckets: int = Field(default=4096, ge=2)
    customer_features: tuple[str, ...] = ("prior_orders", "prior_spend", "prior_sessions")
    # Online fine-tuning: completed sessions kept, and the share of the newest ones that
    # a candidate and the serving model are compared on before a hot swap.
    finetune_buffer_sessions: int = Field(default=20_000, ge=10)
    finetune_holdout_fraction: float = Field(default=0.2, gt=0, lt=1)
    finetune_epochs: int = Field(default=1, ge=1)
    finetune_learning_rate: float = Field(default=1e-3, gt=0)
    # Redis session log: entries kept per session (= replay_events) and their TTL.
    session_log_ttl_minutes: float = Field(default=60.0, gt=0)


class DecisionSettings(BaseModel):
    """Offer catalog, contact policy and alert thresholds."""

    model_config = ConfigDict(frozen=True)

    catalog_path: Path | None = None  # None: the catalog shipped with the package
    frequency_cap_minutes: float = Field(default=60.0, ge=0)
    min_score: float = Field(default=0.0, ge=0)
    cart_abandonment_minutes: float = Field(default=30.0, gt=0)
    negative_rating_max: int = Field(default=2, ge=1, le=5)
    negative_sentiment_max: float = Field(default=-0.3)
    high_value_intent_min_propensity: float = Field(default=0.7, ge=0, le=1)
    high_value_intent_min_cart: float = Field(default=200.0, ge=0)
    # -- offer policy (models/policy.py): score = propensity x value x category x intent x action
    # Click actions that may trigger an offer, and their weight in the score.
    offer_action_weights: dict[str, float] = Field(
        default_factory=lambda: {
            "view": 1.0,
            "search": 1.0,
            "add_to_cart": 1.25,
            "remove_from_cart": 1.0,
            "checkout_start": 1.25,
        }
    )
    category_match_event: float = Field(default=1.0, ge=0)  # offer targets this click's category
    category_match_top: float = Field(default=0.6, ge=0)  # ... one of the customer's top ones
    category_match_any: float = Field(default=0.5, ge=0)  # offer has no target categories
    intent_purchase_high: float = Field(default=0.6, ge=0, le=1)
    intent_purchase_boost: float = Field(default=0.5, ge=0)  # factor 1 + boost * p(purchase)
    # Offers with an ``intent`` (e.g. cart savers on "abandon") need at least this probability.
    offer_intent_min_prob: float = Field(default=0.5, ge=0, le=1)
    offer_intent_boost: float = Field(default=2.0, ge=0)  # factor 1 + boost * p(intent)
    # -- alerts (models/alerts.py)
    negative_medium_sentiment_max: float = Field(default=-0.5)
    negative_high_sentiment_max: float = Field(default=-0.7)
    high_value_intent_min_purchase_prob: float = Field(default=0.8, ge=0, le=1)
    high_value_intent_actions: tuple[str, ...] = ("add_to_cart", "checkout_start")
    early_abandon_prob: float = Field(default=0.8, ge=0, le=1)
    cart_watch_max_entries: int = Field(default=200_000, ge=1)
