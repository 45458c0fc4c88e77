"""Arbitration: which of the eligible offers a click gets, under the contact policy.

For a click, in order:

1. the contact policy may block the customer (opt-out, open negative-feedback alert, quiet
   hours), then offers sent to them within the per-offer cap are dropped;
2. a control group (``control_percent`` of customers by a stable hash of the id) gets a
   random eligible offer, or none with probability ``control_no_offer_share`` (the draw
   hashes the trigger event, so a replay decides the same);
3. everyone else gets the bandit's choice (LinUCB over the eligible offers, ``arbitration
   = "bandit"``, drawn with a known probability: ``exploration.py``) or the fixed rule's
   best score (``arbitration = "fixed"``, deterministic).

Every choice carries its propensity (the probability the arm gave the chosen offer) and the
eligible offers with their bandit contexts: what off-policy evaluation needs (``ope.py``).

It also carries the policy's reasons, ``arbitration:<step>`` (``bandit_ucb`` for the
bandit's best bound, ``bandit_explore`` for an exploration draw, ``control_random``,
``fixed_best``) and the propensity model's top contributions (``feature:<name>``); ``learn``
feeds a resolved outcome to the bandit.

>>> from features.events import Click
>>> from models.decisioning.catalog import Catalog
>>> from models.settings import DecisionSettings
>>> catalog = Catalog.from_dict({"offers": [
...     {"offer_id": "shoes-10", "name": "10% off shoes", "kind": "discount", "value": 20,
...      "target_categories": ["shoes"]},
...     {"offer_id": "any-5", "name": "5 off", "kind": "discount", "value": 5}]})
>>> settings = DecisionSettings(control_percent=0.0)
>>> arbiter = OfferArbiter(OfferPolicy(catalog, settings), settings, n_segments=2)
>>> click = Click("e1", "c1", "s1", 1700000000.0, "view", "i9", "shoes")
>>> choice = arbiter.choose(ClickContext(click, {}, (("shoes", 2.0),), 0.5, 1, None, "v1"), None)
>>> choice.decision.offer_id, choice.arm, choice.decision.reasons[-1]
('shoes-10', 'bandit', 'arbitration:bandit_ucb')
>>> sent = ContactState(last_offer={"shoes-10": (1699999000.0, "e0")})
>>> arbiter.choose(ClickContext(click, {}, (), 0.5, 1, None, "v1"), sent).decision.offer_id
'any-5'
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from features.events import Click
from models.decisioning.bandit import CONTEXT_NAMES, LinUCB, bucket, context_vector
from models.decisioning.contact import ContactPolicy
from models.decisioning.exploration import draw, probabilities
from models.decisioning.outcomes import ContactState, Resolution
from models.decisioning.policy import ClickContext, OfferDecision, OfferPolicy
from models.settings import DecisionSettings

__all__ = ["ARMS", "Choice", "Explain", "OfferArbiter"]

logger = logging.getLogger(__name__)

ARMS = ("bandit", "control", "fixed")

# The per-offer entries of the bandit context (the rest depend only on the customer).
_PROPENSITY, _AFFINITY, _CLICK_MATCH, _GENERIC, _SCORE = (
    CONTEXT_NAMES.index(name)
    for name in ("propensity", "offer_affinity", "click_match", "generic", "log_score")
)

Explain = Sequence[tuple[str, float]] | Callable[[], Sequence[tuple[str, float]]]
"""Top feature contributions ``(name, value)``, or a function computing them on demand."""


@dataclass(frozen=True, slots=True)
class Choice:
    """The offer chosen for one click, the arm that chose it and the bandit context.

    ``propensity`` is the probability with which the arm chose this offer among
    ``eligible`` (the offers allowed by the contact policy, fixed-rule order: best score
    first); ``contexts`` holds the bandit context of each of them, in the same order. The
    fixed rule is deterministic (propensity 1); the control group picks uniformly (1 / k,
    given that it makes an offer at all, see ``control_no_offer_share``)."""

    decision: OfferDecision
    arm: str
    context: tuple[float, ...]
    target_categories: tuple[str, ...]
    propensity: float = 1.0
    eligible: tuple[str, ...] = ()
    contexts: tuple[tuple[float, ...], ...] = ()

    def logged_contexts(self, digits: int = 4) -> list[list[float]]:
        """``contexts`` rounded for the offer record (what evaluation re-scores)."""
        return [[round(v, digits) for v in x] for x in self.contexts]


class OfferArbiter:
    """Contact policy, control group and bandit (or fixed rule) over ``policy.eligible``."""

    def __init__(
        self,
        policy: OfferPolicy,
        settings: DecisionSettings,
        n_segments: int,
        bandit: LinUCB | None = None,
    ) -> None:
        self.policy = policy
        self.settings = settings
        self.n_segments = n_segments
        self.contact = ContactPolicy(settings)
        n_features = len(context_vector({}, 0.0, 0, n_segments, None, 0.0, False, False, 0.0))
        self.bandit = (
            bandit
            if bandit is not None
            else LinUCB(n_features, alpha=settings.bandit_alpha, prior=settings.bandit_prior)
        )
        self.counters: Counter[str] = Counter()
        self._targets = {o.offer_id: tuple(o.target_categories) for o in policy.catalog.offers}
        self._control = settings.control_percent / 100.0

    def in_control(self, customer_id: str) -> bool:
        """True for the stable ``control_percent`` of customers."""
        return bucket(customer_id) < self._control

    def choose(
        self, ctx: ClickContext, state: ContactState | None, explain: Explain = ()
    ) -> Choice | None:
        """The offer for this click, or None (nothing eligible, blocked, or held out).

        ``explain`` (the propensity model's top contributions) may be a function returning
        them, called only when an offer is chosen.
        """
        event = ctx.event
        if not isinstance(event, Click):
            return None
        eligible = self.policy.eligible(ctx)
        if not eligible:
            return None
        why = self.contact.blocked(event.ts, state)
        if why is not None:
            self.counters["blocked:" + why] += 1
            return None
        cid, trigger = event.customer_id, event.event_id
        allowed = [
            d for d in eligible if self.contact.offer_allowed(d.offer_id, trigger, event.ts, state)
        ]
        if not allowed:
            self.counters["blocked:offer_cap"] += 1
            return None
        contexts = self._contexts(allowed, ctx)
        if self.in_control(cid):
            if bucket(trigger, "holdout") < self.settings.control_no_offer_share:
                self.counters["control_holdout"] += 1
                return None
            k = int(bucket(trigger, "pick") * len(allowed))
            arm, step = "control", "control_random"
        elif self.settings.arbitration == "fixed":
            k, arm, step = 0, "fixed", "fixed_best"
        else:
            k, propensity, best = self._explore(allowed, contexts)
            arm, step = "bandit", "bandit_ucb" if best else "bandit_explore"
        if arm == "control":
            propensity = 1.0 / len(allowed)
        elif arm == "fixed":
            propensity = 1.0
        chosen = allowed[k]
        if callable(explain):
            explain = explain()
        reasons = (
            *chosen.reasons,
            *(f"feature:{name}" for name, _ in explain),
            f"arbitration:{step}",
        )
        if state is not None:
            self.contact.note_offer(chosen.offer_id, trigger, event.ts, state)
        self.counters["arm:" + arm] += 1
        return Choice(
            decision=dataclasses.replace(chosen, reasons=reasons),
            arm=arm,
            context=tuple(contexts[k]),
            target_categories=self._targets.get(chosen.offer_id, ()),
            propensity=propensity,
            eligible=tuple(d.offer_id for d in allowed),
            contexts=tuple(tuple(x) for x in contexts),
        )

    def _explore(
        self, allowed: Sequence[OfferDecision], contexts: list[list[float]]
    ) -> tuple[int, float, bool]:
        """The bandit's draw over ``allowed``, its probability, and whether it is the best
        upper confidence bound (else an exploration step; ``exploration.py``).

        The uniform number hashes the offer event id, a function of (customer, trigger
        event): a replay draws the same offer with the same propensity."""
        arms = [d.offer_id for d in allowed]
        if len(arms) == 1:
            self.bandit.select(arms, contexts)  # creates the arm on first sight
            return 0, 1.0, True
        s = self.settings
        p = probabilities(
            self.bandit.scores(arms, contexts),
            s.bandit_exploration,
            s.bandit_epsilon,
            s.bandit_temperature,
        )
        k = draw(p, bucket(allowed[0].offer_event_id, "explore"))
        return k, float(p[k]), k == int(p.argmax())

    def learn(self, resolution: Resolution) -> None:
        """Feed a resolved window to the bandit (every arm's data: the model is contextual)."""
        offer = resolution.offer
        if offer.context:
            self.bandit.learn_one(offer.offer_id, offer.context, float(resolution.converted))

    def _contexts(self, decisions: Sequence[OfferDecision], ctx: ClickContext) -> list[list[float]]:
        """``context_vector`` of each decision: the customer part is built once per click."""
        first = decisions[0]
        shared = context_vector(
            ctx.features,
            ctx.propensity,
            first.segment,
            self.n_segments,
            ctx.intent,
            0.0,
            False,
            False,
            0.0,
        )
        top_categories = ctx.top_categories
        total = sum(w for _, w in top_categories if w > 0.0)
        out = []
        for d in decisions:
            targets = self._targets.get(d.offer_id, ())
            if targets and total > 0.0:
                affinity = sum(w for c, w in top_categories if c in targets and w > 0.0) / total
            else:
                affinity = 0.0
            x = shared.copy()
            x[_PROPENSITY] = float(d.propensity)
            x[_AFFINITY] = float(affinity)
            x[_CLICK_MATCH] = 1.0 if ctx.event.category in targets else 0.0
            x[_GENERIC] = 0.0 if targets else 1.0
            x[_SCORE] = math.log1p(max(d.score, 0.0)) / 4.0
            out.append(x)
        return out
