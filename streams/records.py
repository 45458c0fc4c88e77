"""Output records: what marketing engines and ops tools read from our topics.

Serialized as plain JSON objects (Faust uses orjson when it is installed), keyed by
``customer_id``, without Faust metadata, so any Kafka client can read them. Ids are stable
functions of the trigger event, so a replay after a crash re-emits the same ids.
"""

from __future__ import annotations

import faust

__all__ = ["Alert", "DeadLetter", "Offer", "OfferOutcome", "PropensityLabel", "SessionIntent"]

OUTPUT_SCHEMA_VERSION = 1


class Offer(faust.Record, serializer="json", include_metadata=False):
    offer_event_id: str
    customer_id: str
    offer_id: str
    score: float
    propensity: float
    segment: int
    reasons: list[str]
    trigger_event_id: str
    model_version: str
    ts: float
    event_ts: float
    intent: dict[str, float] | None = None
    recommended_items: list[str] | None = None
    # What off-policy evaluation needs (``streamscore evaluate``); None in records written
    # before they were logged. The probability with which the arm chose ``offer_id``
    # (bandit: its exploration draw; control: 1 / len(eligible); fixed rule: 1), the offers
    # it chose among (best fixed-rule score first) and the bandit context of each.
    policy_propensity: float | None = None
    eligible: list[str] | None = None
    contexts: list[list[float]] | None = None
    schema_version: int = OUTPUT_SCHEMA_VERSION


class Alert(faust.Record, serializer="json", include_metadata=False):
    alert_id: str
    customer_id: str
    type: str
    severity: str
    score: float
    trigger_event_id: str
    ts: float
    event_ts: float
    model_version: str
    details: dict[str, object] | None = None
    schema_version: int = OUTPUT_SCHEMA_VERSION


class OfferOutcome(faust.Record, serializer="json", include_metadata=False):
    """How an offer ended: converted by ``order_id`` inside its window, or not."""

    offer_event_id: str
    customer_id: str
    offer_id: str
    converted: bool
    order_id: str | None
    revenue: float
    arm: str  # "bandit" | "control" | "fixed"
    offer_ts: float  # event time the offer was made
    ts: float  # event time of the conversion, or the window's end
    schema_version: int = OUTPUT_SCHEMA_VERSION


class DeadLetter(faust.Record, serializer="json", include_metadata=False):
    """A record that broke the contract: its original bytes (base64) and why.

    At most ``DEAD_LETTER_MAX_PAYLOAD`` bytes of the original are kept (``payload_truncated``
    then says so); ``payload_bytes`` and ``payload_sha256`` are always the whole original's,
    so a dead letter fits any producer's request size and still identifies its record."""

    source_topic: str
    partition: int
    offset: int
    reason: str
    payload_b64: str
    payload_preview: str
    key: str | None
    ts: float
    payload_bytes: int = 0
    payload_sha256: str = ""
    payload_truncated: bool = False
    schema_version: int = OUTPUT_SCHEMA_VERSION


class SessionIntent(faust.Record, serializer="json", include_metadata=False):
    """How the intent model expects a click's session to end (optional per-click output)."""

    customer_id: str
    session_id: str
    trigger_event_id: str
    purchase: float
    abandon: float
    browse: float
    model_version: str
    event_ts: float
    schema_version: int = OUTPUT_SCHEMA_VERSION


class PropensityLabel(faust.Record, serializer="json", include_metadata=False):
    """A click's purchase label, learned by the propensity model once its horizon closed
    (optional output: training data and calibration checks downstream). Keyed by customer;
    ``click_event_id`` is stable, so a label re-emitted after a crash is the same record."""

    click_event_id: str
    customer_id: str
    purchased: bool  # the customer bought within the horizon after the click
    propensity: float  # the probability the model gave at click time
    click_ts: float  # event time of the click
    ts: float  # event time the horizon closed at on the click's partition
    schema_version: int = OUTPUT_SCHEMA_VERSION
