"""Settings of the online models, the intent LSTM and the offer decision."""

from __future__ import annotations

from pathlib import Path
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

__all__ = ["AlertSettings", "DecisionSettings", "IntentSettings", "ModelSettings", "TextSettings"]


# The built-in key: for code that runs models in-process (tests, notebooks). A worker refuses
# to start with it (streams/worker.py): anyone who can write the checkpoint directory and knows
# it could sign a pickle that the worker loads.
DEV_CHECKPOINT_KEY: Final = "streamscore-dev-key-change-me"


class ModelSettings(BaseModel):
    """River models: propensity, segments, checkpoints."""

    model_config = ConfigDict(frozen=True)

    # "Buys within H minutes of this click" is the propensity label.
    propensity_horizon_minutes: float = Field(default=30.0, gt=0)
    propensity_learning_rate: float = Field(default=0.05, gt=0)
    n_segments: int = Field(default=6, ge=1)
    checkpoint_dir: Path = Path("var/checkpoints")
    # A save pickles in the event loop (~60 ms with every model at its cap, mostly the
    # anomaly detector's 100k customers; `streamscore bench checkpoint`) and signs, writes and
    # fsyncs in a thread; shutdown always saves.
    checkpoint_every_s: float = Field(default=300.0, gt=0)
    # How often a worker merges its models with the deployment's through Redis (models/sync.py);
    # 0: every worker keeps its own models (the behaviour before one model per deployment).
    sync_every_s: float = Field(default=5.0, ge=0)
    # HMAC-SHA256 key signing checkpoints; unsigned or tampered files are refused.
    checkpoint_key: SecretStr = SecretStr(DEV_CHECKPOINT_KEY)
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
    init_seed: int = 0  # weights of an untrained model (no checkpoint configured)
    # Capture fixed-size steps as CUDA graphs (only on CUDA; falls back to eager on failure).
    cuda_graphs: bool = True
    # Architecture and encoding of a fresh (untrained) model; a checkpoint carries its own.
    hidden_size: int = Field(default=64, ge=1)
    category_buckets: int = Field(default=1024, ge=2)
    item_buckets: int = Field(default=4096, ge=2)
    customer_features: tuple[str, ...] = ("prior_orders", "prior_spend")
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
    # -- offer policy (models/decisioning/policy.py):
    # score = propensity x value x category x intent x action
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
    # -- alerts (models/alerts/rules.py)
    negative_medium_sentiment_max: float = Field(default=-0.5)
    negative_high_sentiment_max: float = Field(default=-0.7)
    high_value_intent_min_purchase_prob: float = Field(default=0.8, ge=0, le=1)
    high_value_intent_actions: tuple[str, ...] = ("add_to_cart", "checkout_start")
    early_abandon_prob: float = Field(default=0.8, ge=0, le=1)
    # customers with a watched cart per input partition (in Redis); beyond it those closest
    # to a deadline go unwatched
    cart_watch_max_entries: int = Field(default=200_000, ge=1)
    # -- offers that learn (models/decisioning/: outcomes.py, bandit.py, contact.py)
    # A purchase of a target category within this window after an offer is its conversion.
    attribution_window_minutes: float = Field(default=1440.0, gt=0)
    # "bandit": LinUCB over the eligible offers; "fixed": the policy's best score.
    arbitration: Literal["bandit", "fixed"] = "bandit"
    bandit_alpha: float = Field(default=0.3, ge=0)  # exploration: width of the UCB bonus
    bandit_prior: float = Field(default=1.0, gt=0)  # ridge prior (A = prior * I)
    # How the bandit turns UCB scores into a choice with a known probability, logged with
    # every offer as policy_propensity (models/decisioning/exploration.py): epsilon-greedy,
    # softmax over the scores (at bandit_temperature, mixed with epsilon of uniform), or
    # greedy (the argmax, propensity 1: no off-policy evaluation possible). The draw hashes
    # (customer, trigger event), so a replay chooses the same offer.
    bandit_exploration: Literal["epsilon_greedy", "softmax", "greedy"] = "epsilon_greedy"
    bandit_epsilon: float = Field(default=0.1, ge=0, le=1)
    bandit_temperature: float = Field(default=0.05, gt=0)
    # Control group: this percentage of customers (hash of the id) gets a random eligible
    # offer (propensity 1 / eligible offers), or none with probability control_no_offer_share
    # (the holdout: no offer record, so no outcome; the unconditional probability of a given
    # offer is (1 - control_no_offer_share) / eligible offers).
    control_percent: float = Field(default=5.0, ge=0, le=100)
    control_no_offer_share: float = Field(default=0.5, ge=0, le=1)
    # Contact policy: the same offer at most once per customer within this many hours.
    offer_frequency_cap_hours: float = Field(default=24.0, ge=0)
    # Quiet hours, [start, end) on the wall clock (a message is sent now, whatever time the
    # event says) in ``timezone`` (an IANA name such as "Europe/Berlin", daylight saving
    # included), or UTC + utc_offset_hours when no timezone is set; None: no quiet hours.
    quiet_hours_start: int | None = Field(default=None, ge=0, le=23)
    quiet_hours_end: int | None = Field(default=None, ge=0, le=23)
    timezone: str | None = None
    utc_offset_hours: float = Field(default=0.0, ge=-14, le=14)
    # No offers for this many hours after a negative_feedback alert.
    negative_feedback_block_hours: float = Field(default=24.0, ge=0)


class TextSettings(BaseModel):
    """Feedback text models (``models/online/text.py``): learned sentiment and topics."""

    model_config = ConfigDict(frozen=True)

    # The learned sentiment's weight is m / (m + blend_examples), m = the rarer class's
    # count of rated examples, capped at max_model_weight: the lexicon rules while it is young.
    blend_examples: int = Field(default=50, ge=1)
    max_model_weight: float = Field(default=0.7, ge=0, le=1)
    # The learned topic model answers when seeds are silent, after this many seed-labelled
    # examples, when its best topic has at least this probability.
    topic_min_examples: int = Field(default=30, ge=1)
    topic_min_proba: float = Field(default=0.6, ge=0, le=1)
    # Both naive Bayes models hash tokens into this many rows (models/online/naive_bayes.py):
    # their size is fixed (8 bytes x rows x classes: 1 MiB for sentiment, 2.5 MiB for topics at
    # 65,536) whatever text arrives, and so are checkpoints and shared snapshots. Fewer rows:
    # more tokens share counts. Every worker of a deployment needs the same value; a checkpoint
    # keeps the value it was trained with.
    vocabulary_buckets: int = Field(default=1 << 16, ge=16, le=1 << 22)


class AlertSettings(BaseModel):
    """Churn and anomaly alerts, and the per customer + type cool-down of every alert."""

    model_config = ConfigDict(frozen=True)

    # churn_risk (models/alerts/churn.py): enter at >= enter, leave at <= exit (hysteresis).
    churn_enabled: bool = True
    churn_enter: float = Field(default=0.95, gt=0, le=1)
    churn_exit: float = Field(default=0.6, ge=0, le=1)
    # Customers below this many clicks a day over their last 30 days have no baseline.
    churn_min_daily_clicks: float = Field(default=1.0, gt=0)
    # Silence shorter than this never counts (daily rhythms: nights, weekends).
    churn_grace_hours: float = Field(default=24.0, ge=0)
    churn_max_customers: int = Field(default=200_000, ge=1)
    # anomaly (models/alerts/anomaly.py): HalfSpaceTrees on scaled amount, basket size, gap.
    anomaly_enabled: bool = True
    anomaly_warmup: int = Field(default=300, ge=1)
    anomaly_threshold: float = Field(default=0.8, ge=0, le=1)
    anomaly_quantile: float = Field(default=0.995, gt=0, lt=1)
    anomaly_window: int = Field(default=250, ge=2)
    anomaly_max_customers: int = Field(default=100_000, ge=1)
    # Cool-down per (customer, alert type), in minutes; types not listed use the default.
    cooldown_minutes: dict[str, float] = Field(
        default_factory=lambda: {
            "negative_feedback": 60.0,
            "high_value_intent": 30.0,
            "cart_abandonment": 240.0,
            "churn_risk": 7 * 1440.0,
            "anomaly": 60.0,
        }
    )
    cooldown_default_minutes: float = Field(default=60.0, ge=0)
    cooldown_max_entries: int = Field(default=500_000, ge=1)
