"""The contact policy: may this customer be contacted now, and with this offer?

Pure rules over a ``ContactState`` that the caller reads from Redis
(``models/decisioning/outcomes.py``) once per batch: the opt-out (suppression list), an open
``negative_feedback`` alert, quiet hours in local time, and the per-offer frequency cap (the
same offer at most once per customer within ``offer_frequency_cap_hours``; a replay of the
trigger that sent it is allowed). The per-customer frequency cap stays with
``FeatureStore.claim_contacts``. Times are event times (epoch seconds), except quiet hours:
they are about when the customer gets the message, so they are checked against the wall clock
(``now``), and a backlog, a replay or a device with a wrong clock cannot slip an offer into them.

>>> from models.settings import DecisionSettings
>>> policy = ContactPolicy(DecisionSettings(quiet_hours_start=22, quiet_hours_end=7,
...                                         timezone="Europe/Berlin"))
>>> t = 1_700_000_000.0  # 2023-11-14 22:13 UTC, 23:13 in Berlin
>>> policy.blocked(t - 12 * 3600, ContactState(), now=t)  # an event from the afternoon, now
'quiet_hours'
>>> policy.blocked(t, ContactState(suppressed=True), now=t + 9 * 3600)
'suppressed'
>>> state = ContactState(last_offer={"o1": (t, "e1")})
>>> policy.offer_allowed("o1", "e2", t + 3600, state), policy.offer_allowed("o1", "e1", t, state)
(False, True)
"""

from __future__ import annotations

import time
from datetime import datetime
from zoneinfo import ZoneInfo

from models.decisioning.outcomes import ContactState
from models.settings import DecisionSettings

__all__ = ["NEGATIVE_FEEDBACK", "ContactPolicy", "ContactState"]

NEGATIVE_FEEDBACK = "negative_feedback"


class ContactPolicy:
    """Contact rules from ``settings`` (quiet hours, per-offer cap, feedback block)."""

    def __init__(self, settings: DecisionSettings) -> None:
        self.settings = settings
        start, end = settings.quiet_hours_start, settings.quiet_hours_end
        self._quiet = None if start is None or end is None or start == end else (start, end)
        self._offset_s = settings.utc_offset_hours * 3600.0
        self._zone = ZoneInfo(settings.timezone) if settings.timezone else None
        self._offer_cap_s = settings.offer_frequency_cap_hours * 3600.0

    def in_quiet_hours(self, ts: float) -> bool:
        """True when ``ts`` falls in [start, end) local time (the range may wrap midnight)."""
        if self._quiet is None:
            return False
        start, end = self._quiet
        if self._zone is not None:
            hour = datetime.fromtimestamp(ts, self._zone).hour
        else:
            hour = int(((ts + self._offset_s) % 86_400.0) // 3600.0)
        return start <= hour < end if start < end else hour >= start or hour < end

    def blocked(
        self, ts: float, state: ContactState | None, now: float | None = None
    ) -> str | None:
        """Why the customer may not be contacted about an event at ``ts`` at all, or None;
        quiet hours are checked at wall time ``now`` (the clock when None)."""
        if state is not None:
            if state.suppressed:
                return "suppressed"
            # Open from the feedback's own time on: a click from before the complaint (read
            # later, since clicks and feedback are separate topics) is not blocked by it.
            block_s = self.settings.negative_feedback_block_hours * 3600.0
            if state.negative_until - block_s <= ts < state.negative_until:
                return NEGATIVE_FEEDBACK
        if self.in_quiet_hours(time.time() if now is None else now):
            return "quiet_hours"
        return None

    def offer_allowed(
        self, offer_id: str, trigger_event_id: str, ts: float, state: ContactState | None
    ) -> bool:
        """False when ``offer_id`` went to this customer less than the cap before ``ts``."""
        if state is None or self._offer_cap_s <= 0.0:
            return True
        last = state.last_offer.get(offer_id)
        if last is None or last[1] == trigger_event_id:
            return True
        return abs(ts - last[0]) >= self._offer_cap_s

    def note_offer(
        self, offer_id: str, trigger_event_id: str, ts: float, state: ContactState
    ) -> None:
        """Record a send in ``state`` (so a later click of the same batch sees the cap)."""
        last = state.last_offer.get(offer_id)
        if last is None or ts >= last[0]:
            state.last_offer[offer_id] = (ts, trigger_event_id)

    def note_negative_feedback(self, ts: float, state: ContactState) -> None:
        """Open the feedback block from ``ts`` on."""
        until = ts + self.settings.negative_feedback_block_hours * 3600.0
        state.negative_until = max(state.negative_until, until)
