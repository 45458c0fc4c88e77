"""The next-best-offer policy: pick the offer worth most for this click, or none.

score = propensity x value x category match x intent boost x action weight, over the offers
whose eligibility rules hold. The category match is ``category_match_event`` when the offer
targets this click's category, ``category_match_top`` scaled by affinity when it targets one of
the customer's top categories, ``category_match_any`` for offers without target categories, and
0 otherwise. Offers with an ``intent`` (a cart saver on "abandon") need that intent's probability
>= ``offer_intent_min_prob`` and get ``1 + offer_intent_boost * p``; without target categories
they match the session rather than a category, so they get ``category_match_event``. Other
offers get ``1 + intent_purchase_boost * p(purchase)`` when p(purchase) >= ``intent_purchase_high``.

``decide`` is pure and cheap: offers are grouped by category once, at construction, and per
event only the groups of this category and of the customer's top categories are scanned. The
frequency cap is the caller's (it needs Redis).

>>> from features.events import Click
>>> from models.settings import DecisionSettings
>>> catalog = Catalog.from_dict({"offers": [
...     {"offer_id": "shoes-10", "name": "10% off shoes", "kind": "discount", "value": 20,
...      "target_categories": ["shoes"]},
...     {"offer_id": "saver", "name": "5 off now", "kind": "cart_saver", "value": 10,
...      "intent": "abandon", "min_cart_value": 50}]})
>>> policy = OfferPolicy(catalog, DecisionSettings())
>>> click = Click("e1", "c1", "s1", 1700000000.0, "view", "i9", "shoes")
>>> intent = {"purchase": 0.1, "abandon": 0.85, "browse": 0.05}
>>> d = policy.decide(ClickContext(click, {"cart_value": 80.0, "spend_30d": 10.0}, (), 0.5, 3,
...                                intent, "v1"))
>>> d.offer_id, round(d.score, 3), d.reasons[:3]
('saver', 13.5, ('any_cat', 'intent_abandon_high', 'cart_value>=50'))
>>> policy.decide(ClickContext(click, {}, (), 0.5, 3, None, "v1")).offer_id
'shoes-10'
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from features.events import Click, Event
from models.decisioning.catalog import Catalog, Offer
from models.ids import offer_event_id
from models.settings import DecisionSettings

__all__ = ["ClickContext", "OfferDecision", "OfferPolicy"]

logger = logging.getLogger(__name__)

# Features that explain a decision to a human, with the level at which each "stands out".
# The first whose value/level is largest (and >= 1) becomes the "top_feature:<name>" reason.
# A readable heuristic, not a model attribution.
_SIGNALS: Final = (
    ("session_checkouts", 1.0),
    ("carts_5m", 1.0),
    ("session_carts", 2.0),
    ("carts_1h", 2.0),
    ("cart_value", 100.0),
    ("purchases_30d", 2.0),
    ("spend_30d", 300.0),
    ("clicks_1h", 20.0),
    ("category_affinity", 0.5),
)
_ACTION_REASONS: Final = frozenset({"add_to_cart", "remove_from_cart", "checkout_start"})

# What the scan checks per click: (spend_30d, cart_value, segment, propensity, intent, general
# intent boost). A plain tuple: it is built once per click on the hot path.
_Inputs = tuple[float, float, int, float, Mapping[str, float] | None, float]


@dataclass(frozen=True, slots=True)
class ClickContext:
    """What the decision layer is given for one event: the event, its Redis features, the
    customer's top categories (name, affinity), the models' scores and their version."""

    event: Event
    features: Mapping[str, float]
    top_categories: tuple[tuple[str, float], ...]
    propensity: float
    segment: int
    intent: Mapping[str, float] | None
    model_version: str


@dataclass(frozen=True, slots=True)
class OfferDecision:
    """The chosen offer for one trigger event; ``offer_event_id`` is stable under replay."""

    offer_event_id: str
    customer_id: str
    trigger_event_id: str
    ts: float
    offer_id: str
    offer_kind: str
    score: float
    propensity: float
    segment: int
    reasons: tuple[str, ...]
    intent: dict[str, float] | None
    model_version: str


class _Rule:
    """An offer flattened into plain attributes for the per-event scan."""

    __slots__ = (
        "intent",
        "intent_reason",
        "max_spend",
        "min_cart",
        "min_propensity",
        "min_spend",
        "needs_cart",
        "offer",
        "segments",
        "static_reasons",
        "value",
    )

    def __init__(self, offer: Offer) -> None:
        self.offer = offer
        self.value = offer.value
        self.min_spend = offer.min_spend_30d
        self.max_spend = math.inf if offer.max_spend_30d is None else offer.max_spend_30d
        self.min_cart = offer.min_cart_value
        self.needs_cart = offer.needs_cart
        self.min_propensity = offer.min_propensity
        self.segments = frozenset(offer.segments) if offer.segments else None
        self.intent = offer.intent
        self.intent_reason = f"intent_{offer.intent}_high" if offer.intent else ""
        reasons = []
        if offer.min_cart_value > 0:
            reasons.append(f"cart_value>={offer.min_cart_value:g}")
        elif offer.needs_cart:
            reasons.append("cart_nonempty")
        if offer.min_spend_30d > 0:
            reasons.append(f"spend_30d>={offer.min_spend_30d:g}")
        if offer.max_spend_30d is not None:
            reasons.append(f"spend_30d<={offer.max_spend_30d:g}")
        self.static_reasons = tuple(reasons)


class OfferPolicy:
    """Chooses the next best offer for a click from ``catalog`` under ``settings``."""

    def __init__(self, catalog: Catalog, settings: DecisionSettings) -> None:
        self.catalog = catalog
        self.settings = settings
        by_category: dict[str, list[_Rule]] = {}
        generic: list[_Rule] = []
        situational: list[_Rule] = []
        for offer in catalog.offers:
            rule = _Rule(offer)
            if not offer.target_categories:
                (generic if offer.intent is None else situational).append(rule)
            for category in offer.target_categories:
                by_category.setdefault(category, []).append(rule)
        self._by_category = {cat: tuple(rules) for cat, rules in by_category.items()}
        self._generic = tuple(generic)
        self._situational = tuple(situational)
        self._action_weights = dict(settings.offer_action_weights)
        self._min_score = settings.min_score
        self._w_event = settings.category_match_event
        self._w_top = settings.category_match_top
        self._w_any = settings.category_match_any
        self._purchase_high = settings.intent_purchase_high
        self._purchase_boost = settings.intent_purchase_boost
        self._intent_min = settings.offer_intent_min_prob
        self._intent_boost = settings.offer_intent_boost

    @classmethod
    def from_settings(cls, settings: DecisionSettings) -> OfferPolicy:
        """A policy over ``settings.catalog_path`` (or the shipped catalog)."""
        return cls(Catalog.load(settings.catalog_path), settings)

    def decide(self, ctx: ClickContext) -> OfferDecision | None:
        """The best eligible offer scoring above ``min_score`` for this click, else None.

        Only clicks whose action is in ``offer_action_weights`` trigger; purchases and
        feedback return None. ``ctx.intent`` is None when the session model is off (offers
        that need an intent are then ineligible).
        """
        event = ctx.event
        if not isinstance(event, Click):
            return None
        prepared = self._inputs(event, ctx)
        if prepared is None:
            return None
        base, x = prepared
        best: _Rule | None = None
        best_score = self._min_score
        match, match_cat = "", ""
        for rules, factor, prefix, category in self._groups(
            event.category, ctx.top_categories, base, ctx.intent
        ):
            rule, best_score = self._scan(rules, factor, best_score, x)
            if rule is not None:
                best, match, match_cat = rule, prefix, category
        if best is None:
            return None
        return self._decision(
            event,
            best,
            best_score,
            match + match_cat,
            offer_event_id(event.customer_id, event.event_id),
            _top_feature(ctx.features),
            x,
            ctx.model_version,
        )

    def eligible(self, ctx: ClickContext) -> list[OfferDecision]:
        """Every eligible offer scoring above ``min_score``, best first (what ``decide`` ranks).

        The arbitration (``models/decisioning/arbiter.py``) chooses among these; the first one is
        ``decide``'s choice. An offer in several scanned groups keeps its best score.
        """
        event = ctx.event
        if not isinstance(event, Click):
            return []
        prepared = self._inputs(event, ctx)
        if prepared is None:
            return []
        base, x = prepared
        best: dict[str, tuple[float, _Rule, str]] = {}
        for rules, factor, prefix, category in self._groups(
            event.category, ctx.top_categories, base, ctx.intent
        ):
            for r in rules:
                rule, score = self._scan((r,), factor, self._min_score, x)
                if rule is not None and score > best.get(r.offer.offer_id, (-1.0,))[0]:
                    best[r.offer.offer_id] = (score, r, prefix + category)
        ranked = sorted(best.values(), key=lambda t: -t[0])
        if not ranked:
            return []
        # once per click
        oid = offer_event_id(event.customer_id, event.event_id)
        top = _top_feature(ctx.features)
        return [
            self._decision(event, r, score, match, oid, top, x, ctx.model_version)
            for score, r, match in ranked
        ]

    def _inputs(self, event: Click, ctx: ClickContext) -> tuple[float, _Inputs] | None:
        """The base score (propensity x action weight) and what ``_scan`` checks for this
        click, or None when it cannot trigger: its action is not in ``offer_action_weights``
        or the base score is not positive.
        """
        action_weight = self._action_weights.get(event.action)
        if action_weight is None:
            return None
        propensity, intent, features = ctx.propensity, ctx.intent, ctx.features
        base = propensity * action_weight
        if not base > 0.0:  # also rejects NaN
            return None
        general = 1.0
        if intent is not None:
            p_purchase = intent.get("purchase", 0.0)
            if p_purchase >= self._purchase_high:
                general = 1.0 + self._purchase_boost * p_purchase
        spend = features.get("spend_30d", 0.0)
        cart = features.get("cart_value", 0.0)
        return base, (spend, cart, ctx.segment, propensity, intent, general)

    def _groups(
        self,
        category: str,
        top_categories: tuple[tuple[str, float], ...],
        base: float,
        intent: Mapping[str, float] | None,
    ) -> list[tuple[tuple[_Rule, ...], float, str, str]]:
        """The offer groups to scan, in order: (rules, score factor, match reason, category).

        The click's ``category``, then the customer's other top categories (scaled by affinity
        relative to the strongest), then the intent offers, then the untargeted ones.
        """
        groups = []
        rules = self._by_category.get(category)
        if rules:
            groups.append((rules, base * self._w_event, "cat_match:", category))
        if top_categories:
            w_max = 0.0
            for _, weight in top_categories:
                if weight > w_max:
                    w_max = weight
            for top, weight in top_categories:
                if top == category or not weight > 0.0:
                    continue
                rules = self._by_category.get(top)
                if rules:
                    groups.append((rules, base * self._w_top * weight / w_max, "top_cat:", top))
        if self._situational and intent is not None:
            groups.append((self._situational, base * self._w_event, "any_cat", ""))
        if self._generic:
            groups.append((self._generic, base * self._w_any, "any_cat", ""))
        return groups

    def _decision(
        self,
        event: Click,
        rule: _Rule,
        score: float,
        match: str,
        oid: str,
        top: str,
        x: _Inputs,
        model_version: str,
    ) -> OfferDecision:
        _, _, segment, propensity, intent, general = x
        return OfferDecision(
            offer_event_id=oid,
            customer_id=event.customer_id,
            trigger_event_id=event.event_id,
            ts=event.ts,
            offer_id=rule.offer.offer_id,
            offer_kind=rule.offer.kind,
            score=score,
            propensity=propensity,
            segment=segment,
            reasons=self._reasons(rule, match, event.action, segment, general, top),
            intent=None if intent is None else dict(intent),
            model_version=model_version,
        )

    def _scan(
        self,
        rules: tuple[_Rule, ...],
        factor: float,
        best_score: float,
        x: _Inputs,
    ) -> tuple[_Rule | None, float]:
        """The eligible rule scoring above ``best_score`` (first one on ties), and its score."""
        spend, cart, segment, propensity, intent, general = x
        best = None
        for r in rules:
            if (
                propensity < r.min_propensity
                or spend < r.min_spend
                or spend > r.max_spend
                or cart < r.min_cart
                or (r.needs_cart and cart <= 0.0)
                or (r.segments is not None and segment not in r.segments)
            ):
                continue
            if r.intent is None:
                score = factor * r.value * general
            else:
                if intent is None:
                    continue
                p = intent.get(r.intent, 0.0)
                if p < self._intent_min:
                    continue
                score = factor * r.value * (1.0 + self._intent_boost * p)
            if score > best_score:
                best, best_score = r, score
        return best, best_score

    @staticmethod
    def _reasons(
        rule: _Rule,
        match: str,
        action: str,
        segment: int,
        general: float,
        top: str,
    ) -> tuple[str, ...]:
        reasons = [match]
        if action in _ACTION_REASONS:
            reasons.append("action:" + action)
        if rule.intent is not None:
            reasons.append(rule.intent_reason)
        elif general > 1.0:
            reasons.append("intent_purchase_high")
        reasons.extend(rule.static_reasons)
        reasons.append(f"segment:{segment}")
        if top:
            reasons.append(top)
        return tuple(reasons)


def _top_feature(features: Mapping[str, float]) -> str:
    """The ``top_feature:<name>`` reason (see ``_SIGNALS``), or "" when nothing stands out."""
    top, top_ratio = "", 0.0
    for name, level in _SIGNALS:
        ratio = features.get(name, 0.0) / level
        if ratio > top_ratio:
            top, top_ratio = name, ratio
    return "top_feature:" + top if top_ratio >= 1.0 else ""
