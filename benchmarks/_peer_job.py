"""The scoring job written the obvious, per-event way, shared by the two peers.

Per event: ``json.loads``, a few Redis calls (HINCRBY / HSET / HGETALL on one hash per
customer), River ``predict_one``/``learn_one`` through the same models streamscore uses
(propensity, segments), the same offer policy, and an offer dict to send. No batching.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from features.events import Click, InvalidEvent, Limits, parse_event
from models.bundle import ModelBundle
from models.catalog import load_catalog
from models.policy import OfferPolicy
from models.settings import DecisionSettings, ModelSettings

__all__ = ["PerEventJob", "env_names"]


def env_names() -> dict[str, Any]:
    e = os.environ
    return {
        "bootstrap": e["STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS"],
        "redis_url": e["STREAMSCORE_REDIS__URL"],
        "prefix": e.get("STREAMSCORE_REDIS__KEY_PREFIX", "peer"),
        "inputs": {
            e["STREAMSCORE_TOPICS__CLICKS"]: "clicks",
            e["STREAMSCORE_TOPICS__PURCHASES"]: "purchases",
            e["STREAMSCORE_TOPICS__FEEDBACK"]: "feedback",
        },
        "offers": e["STREAMSCORE_TOPICS__OFFERS"],
        "group": e["STREAMSCORE_WORKER__APP_ID"],
    }


class PerEventJob:
    """Models and policy; ``features_commands`` and ``decide`` around the caller's Redis I/O."""

    def __init__(self) -> None:
        self.models = ModelBundle(ModelSettings())
        decision = DecisionSettings(frequency_cap_minutes=0)
        self.policy = OfferPolicy(load_catalog(decision.catalog_path), decision)
        self.limits = Limits()

    def parse(self, kind: str, value: bytes) -> Any:
        json.loads(value)  # the obvious way decodes first (parse_event validates again)
        try:
            return parse_event(kind, value, now=time.time(), kafka_ts=None, limits=self.limits)
        except InvalidEvent:
            return None

    @staticmethod
    def updates(event: Any) -> dict[str, float]:
        """HINCRBYFLOAT fields for this event."""
        if isinstance(event, Click):
            d = {"clicks_30d": 1.0, "clicks_1h": 1.0, "session_clicks": 1.0}
            if event.action == "add_to_cart":
                d.update({"carts_30d": 1.0, "carts_1h": 1.0, "session_carts": 1.0})
                d["cart_value"] = float(event.price or 0.0)
            return d
        if hasattr(event, "total"):
            return {"purchases_30d": 1.0, "spend_30d": float(event.total)}
        return {"feedback_count": 1.0}

    def decide(self, event: Any, raw: dict[bytes, bytes]) -> dict[str, Any] | None:
        x = {k.decode(): float(v) for k, v in raw.items()}
        m = self.models
        if not isinstance(event, Click):
            if hasattr(event, "total"):
                m.propensity.observe_purchase(event.customer_id, event.ts)
            return None
        p = m.propensity.score_click(event.customer_id, event.event_id, event.ts, x)
        segment = m.segments.assign(x)
        m.propensity.expire(event.ts)
        d = self.policy.decide(event, x, (), p, segment, None, m.version)
        if d is None:
            return None
        return {
            "offer_event_id": f"o-{event.event_id}",
            "customer_id": event.customer_id,
            "offer_id": d.offer_id,
            "score": d.score,
            "propensity": p,
            "segment": segment,
            "trigger_event_id": event.event_id,
            "ts": time.time(),
        }
