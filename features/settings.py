"""Settings of the Redis feature store (one section of ``streams.settings.Settings``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr

__all__ = ["FeatureSettings", "RecommendSettings", "RedisSettings"]


class RedisSettings(BaseModel):
    """How to reach Redis (or Valkey, or a Redis Cluster)."""

    model_config = ConfigDict(frozen=True)

    url: str = "redis://127.0.0.1:6379/0"
    username: str | None = None
    password: SecretStr | None = None
    cluster: bool = False
    tls: bool = False
    tls_ca_file: str | None = None
    socket_timeout_s: float = Field(default=5.0, gt=0)
    # Retries with exponential backoff before an operation gives up and the worker
    # pauses (it never drops the batch: offsets are not committed past it).
    retry_attempts: int = Field(default=8, ge=0)
    retry_backoff_max_s: float = Field(default=2.0, gt=0)
    key_prefix: str = "ss"
    # One server: send the commands that stores issue in the same event-loop turn as one
    # pipeline (one round trip instead of one per store; features/commands.py).
    coalesce: bool = True


class FeatureSettings(BaseModel):
    """Rolling-feature behaviour."""

    model_config = ConfigDict(frozen=True)

    # Idle customers' keys expire after this long without an event.
    customer_ttl_days: float = Field(default=35.0, gt=0)
    # Event ids are remembered this long for idempotent replays.
    dedup_ttl_hours: float = Field(default=72.0, gt=0)
    top_categories: int = Field(default=5, ge=1)
    # A session counts as a new one after this much idle time.
    session_gap_minutes: float = Field(default=30.0, gt=0)
    # Category affinity decays by half every this many days (relative to the latest event).
    affinity_half_life_days: float = Field(default=7.0, gt=0)
    # At most this many categories are kept per customer (the weakest is dropped).
    max_categories: int = Field(default=32, ge=1)
    # At most this many event ids are remembered per customer inside the dedup horizon; ids
    # pushed out by this cap raise the customer's dedup floor (older events are then ignored).
    dedup_max_ids: int = Field(default=4096, ge=16)
    # Claimed offers remembered per customer for the frequency cap and replays.
    offers_kept: int = Field(default=32, ge=1)


class RecommendSettings(BaseModel):
    """Item-to-item co-occurrence recommendations (``features/cooccurrence.py``)."""

    model_config = ConfigDict(frozen=True)

    enabled: bool = True
    # How many items an offer recommends.
    n_items: int = Field(default=5, ge=1)
    # Co-occurrence counts halve every this many days (event time).
    half_life_days: float = Field(default=7.0, gt=0)
    # Two items co-occur when one customer touched both within this many minutes.
    pair_window_minutes: float = Field(default=30.0, gt=0)
    # Bounds: co-items kept per item, items per category popularity list, recent items and
    # bought items per customer, and how many recent items seed a recommendation.
    max_co_items: int = Field(default=100, ge=1)
    max_popular: int = Field(default=200, ge=1)
    recent_items: int = Field(default=20, ge=1)
    bought_items: int = Field(default=200, ge=1)
    seed_items: int = Field(default=5, ge=1)
    # Item and category keys expire after this long without an update; customer keys follow
    # ``FeatureSettings.customer_ttl_days``.
    item_ttl_days: float = Field(default=30.0, gt=0)
