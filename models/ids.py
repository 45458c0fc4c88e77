"""Stable ids for what the decision layer emits, derived from the event that triggered it.

A replayed input event (after a rebalance or a crash before the offset commit) yields the same
offer and alert ids, so downstream consumers can drop duplicates by id. Ids are 32 lowercase hex
characters: a BLAKE2b-128 digest, personalised per id kind so that an offer id never equals
an alert id.

>>> offer_event_id("e1")
'824465dda3d679a06713108a5d231af3'
>>> offer_event_id("e1") == offer_event_id("e1"), len(alert_id("e1", "negative_feedback"))
(True, 32)
>>> alert_id("e1", "negative_feedback") != alert_id("e1", "high_value_intent")
True
"""

from __future__ import annotations

from hashlib import blake2b
from typing import Final

__all__ = ["alert_id", "offer_event_id"]

_OFFER: Final = b"ss-offer"
_ALERT: Final = b"ss-alert"


def offer_event_id(trigger_event_id: str) -> str:
    """Id of the offer event decided for ``trigger_event_id``."""
    return blake2b(trigger_event_id.encode(), digest_size=16, person=_OFFER).hexdigest()


def alert_id(trigger_event_id: str, alert_type: str) -> str:
    """Id of the alert of ``alert_type`` raised by ``trigger_event_id``."""
    # NUL cannot appear in an alert type, so (type, id) pairs map to distinct inputs.
    data = f"{alert_type}\x00{trigger_event_id}".encode()
    return blake2b(data, digest_size=16, person=_ALERT).hexdigest()
