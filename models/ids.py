"""Stable ids for what the decision layer emits, derived from the event that triggered it.

An id follows from the trigger's ``(customer_id, event_id)``: event ids are unique per customer
(the contract in the README), not across customers, so two customers whose apps reuse an event id
still get two offers with two ids. A replayed input event (after a rebalance or a crash before
the offset commit) yields the same offer and alert ids, so downstream consumers can drop
duplicates by id. Ids are 32 lowercase hex characters: a BLAKE2b-128 digest, personalised per id
kind so that an offer id never equals an alert id.

>>> offer_event_id("c1", "e1")
'e7becf14d4ee355bf426004894599db0'
>>> offer_event_id("c1", "e1") != offer_event_id("c2", "e1")
True
>>> alert_id("c1", "e1", "negative_feedback") != alert_id("c1", "e1", "high_value_intent")
True
"""

from __future__ import annotations

from hashlib import blake2b
from typing import Final

__all__ = ["alert_id", "offer_event_id"]

_OFFER: Final = b"ss-offer"
_ALERT: Final = b"ss-alert"


def _trigger(customer_id: str, event_id: str) -> bytes:
    # The customer id's length first, so no two (customer, event) pairs share an input.
    return f"{len(customer_id)}:{customer_id}{event_id}".encode()


def offer_event_id(customer_id: str, trigger_event_id: str) -> str:
    """Id of the offer event decided for ``customer_id``'s event ``trigger_event_id``."""
    return blake2b(
        _trigger(customer_id, trigger_event_id), digest_size=16, person=_OFFER
    ).hexdigest()


def alert_id(customer_id: str, trigger_event_id: str, alert_type: str) -> str:
    """Id of the alert of ``alert_type`` raised by ``customer_id``'s event ``trigger_event_id``."""
    # NUL cannot appear in an alert type, so (type, trigger) pairs map to distinct inputs.
    data = alert_type.encode() + b"\x00" + _trigger(customer_id, trigger_event_id)
    return blake2b(data, digest_size=16, person=_ALERT).hexdigest()
