"""Benchmark: does the bandit's offer choice convert better than the fixed rule and control?

One simulated stream (``streams.simulator.Simulator``), one run, three arms side by side:
customers are split by a stable hash into the control group (5 %, a random eligible offer),
the fixed rule (the ``OfferPolicy`` best score) and the greedy bandit (LinUCB's argmax over
the same eligible offers: the behaviour before propensities were logged). On the very clicks
of the greedy bandit's customers, the exploring bandit (the default: epsilon-greedy,
``--epsilon``, drawn by a hash of the offer event, so every offer has a known probability;
``models/decisioning/arbiter.py``) decides too, in the shadow, with conversions of its own
drawn for its offers: a paired comparison, the same customers and clicks (features do not
depend on the offers here). Each session gets at most one offer (at its first eligible click);
its conversion is drawn from the simulator's hidden ``offer_response`` and revealed to the
bandits only ``--delay`` offers later (the attribution window). Each bandit learns from its
own and the control group's outcomes.
In-process, no Kafka or Redis: features are a small in-memory stand-in for the store's
(spend, cart, purchases, category affinities).

Also times one decision + one update of our numpy LinUCB and of River's
``bandit.LinUCBDisjoint`` on the same contexts.

    python -m benchmarks.offer_policy            # ~1 min
    python -m benchmarks.offer_policy --quick    # a few seconds (smoke test)

Writes ``offer_policy.json``, ``offer_policy.md`` and ``offer_policy.png`` under ``--out``.
"""

from __future__ import annotations

import argparse
import math
import random
import time
from collections import defaultdict, deque
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._report import environment, markdown_table, plot_lines, write
from features.events import Click
from features.store import AFFINITY_WEIGHTS
from models.decisioning.arbiter import OfferArbiter
from models.decisioning.bandit import LinUCB, bucket
from models.decisioning.catalog import load_catalog
from models.decisioning.policy import ClickContext, OfferPolicy
from models.settings import DecisionSettings
from streams.simulator import Simulator

ARMS = ("bandit", "explore", "fixed", "control")
N_SEGMENTS = 6


class Customer:
    """A simulated customer's features, kept in memory (a stand-in for the store's)."""

    __slots__ = ("affinity", "cart", "orders", "spend")

    def __init__(self) -> None:
        self.affinity: dict[str, float] = defaultdict(float)
        self.cart = 0.0
        self.orders = 0
        self.spend = 0.0

    def features(self, category: str) -> dict[str, float]:
        total = sum(self.affinity.values()) or 1.0
        return {
            "spend_30d": self.spend,
            "cart_value": self.cart,
            "purchases_30d": float(self.orders),
            "avg_order_value": self.spend / self.orders if self.orders else 0.0,
            "category_affinity": self.affinity.get(category, 0.0) / total,
        }

    def observe(self, topic: str, doc: dict[str, Any]) -> bool:
        """Update the features with a simulated event; True for a click (a decision point)."""
        if topic == "purchases":
            self.orders += 1
            self.spend += doc["total"]
            self.cart = 0.0
            for it in doc["items"]:
                self.affinity[it["category"]] += 5.0
            return False
        if topic != "clicks":
            return False
        action = doc["action"]
        self.affinity[doc["category"]] += AFFINITY_WEIGHTS.get(action, 0.0)
        if action == "add_to_cart":
            self.cart += doc.get("price", 0.0)
        elif action == "remove_from_cart":
            self.cart = max(0.0, self.cart - doc.get("price", 0.0))
        return True

    def top(self, k: int = 5) -> tuple[tuple[str, float], ...]:
        return tuple(sorted(self.affinity.items(), key=lambda t: -t[1])[:k])


def _arm(customer_id: str, control_share: float) -> str:
    if bucket(customer_id) < control_share:
        return "control"
    return "bandit" if bucket(customer_id, "bench-split") < 0.5 else "fixed"


def run_policies(
    n_events: int,
    n_customers: int,
    delay: int,
    block: int,
    seed: int,
    alpha: float,
    epsilon: float = 0.1,
) -> dict[str, Any]:
    sim = Simulator(n_customers, seed=seed, start_ts=1_700_000_000.0, feedback_rate=0.0)
    catalog = load_catalog()
    kinds = {o.offer_id: o.kind for o in catalog.offers}
    targets = {o.offer_id: o.target_categories for o in catalog.offers}
    base = DecisionSettings(control_percent=0.0, bandit_alpha=alpha, bandit_exploration="greedy")
    policy = OfferPolicy(catalog, base)
    bandit = OfferArbiter(policy, base, N_SEGMENTS)
    explore_s = base.model_copy(
        update={"bandit_exploration": "epsilon_greedy", "bandit_epsilon": epsilon}
    )
    explore = OfferArbiter(policy, explore_s, N_SEGMENTS)
    fixed_s = base.model_copy(update={"arbitration": "fixed"})
    fixed = OfferArbiter(policy, fixed_s, N_SEGMENTS)
    control_s = base.model_copy(update={"control_percent": 100.0, "control_no_offer_share": 0.0})
    control = OfferArbiter(policy, control_s, N_SEGMENTS, bandit=bandit.bandit)
    arbiters = {"bandit": bandit, "fixed": fixed, "control": control}
    rng = random.Random(seed)
    shadow_rng = random.Random(seed + 1)  # the exploring bandit's conversions
    customers: dict[str, Customer] = defaultdict(Customer)
    offered_sessions: set[str] = set()
    pending: deque[tuple[int, str, str, tuple[float, ...], float]] = deque()
    series: dict[str, list[tuple[int, float]]] = {a: [] for a in ARMS}  # (offer index, reward)
    chosen: dict[str, dict[str, int]] = {a: defaultdict(int) for a in ARMS}
    n_offers = 0
    decide_s = 0.0
    for ev in sim.events(n_events):
        doc = ev.doc
        if doc is None:
            continue
        cid = doc["customer_id"]
        c = customers[cid]
        if not c.observe(ev.topic, doc):
            continue
        action, category = doc["action"], doc["category"]
        if doc["session_id"] in offered_sessions:
            continue
        x = c.features(category)
        propensity = min(0.9, 0.3 + 0.1 * c.orders)
        segment = min(N_SEGMENTS - 1, int(math.log1p(c.spend) / 1.5))
        click = Click(doc["event_id"], cid, doc["session_id"], doc["ts"], action,
                      doc["item_id"], category, doc.get("price"))  # fmt: skip
        arm = _arm(cid, 0.05)
        t = time.perf_counter()
        ctx = ClickContext(click, x, c.top(), propensity, segment, None, "bench")
        choice = arbiters[arm].choose(ctx, None)
        decide_s += time.perf_counter() - t
        if choice is None:
            continue
        offered_sessions.add(doc["session_id"])
        offer_id = choice.decision.offer_id
        tg = targets[offer_id]
        p = sim.offer_response(cid, offer_id, tg[0] if tg else None, kinds[offer_id])
        reward = float(rng.random() < p)
        series[arm].append((n_offers, reward))
        chosen[arm][offer_id] += 1
        if arm == "bandit":  # the exploring bandit, on the same click
            shadow = explore.choose(ctx, None)
            if shadow is not None:
                sid = shadow.decision.offer_id
                tg = targets[sid]
                p = sim.offer_response(cid, sid, tg[0] if tg else None, kinds[sid])
                r = float(shadow_rng.random() < p)
                series["explore"].append((n_offers, r))
                chosen["explore"][sid] += 1
                pending.append((n_offers, "explore", sid, shadow.context, r))
        if arm != "fixed":
            pending.append((n_offers, arm, offer_id, choice.context, reward))
        n_offers += 1
        while pending and pending[0][0] <= n_offers - delay:
            _, learner, oid, ctx, r = pending.popleft()
            if learner != "explore":
                bandit.bandit.learn_one(oid, ctx, r)
            if learner != "bandit":
                explore.bandit.learn_one(oid, ctx, r)
    # conversion rate per block of offers (by offer index over all arms), per arm
    n_blocks = max(1, n_offers // block)
    curves: dict[str, list[float | None]] = {}
    for arm in ARMS:
        sums, counts = np.zeros(n_blocks), np.zeros(n_blocks)
        for idx, r in series[arm]:
            b = min(idx // block, n_blocks - 1)
            sums[b] += r
            counts[b] += 1
        curves[arm] = [float(s / n) if n else None for s, n in zip(sums, counts, strict=True)]
    totals = {}
    for arm in ARMS:
        rewards = [r for _, r in series[arm]]
        half = len(rewards) // 2
        totals[arm] = {
            "offers": len(rewards),
            "conversions": int(sum(rewards)),
            "rate": sum(rewards) / len(rewards) if rewards else None,
            "rate_second_half": sum(rewards[half:]) / (len(rewards) - half) if rewards else None,
            "top_offers": dict(sorted(chosen[arm].items(), key=lambda t: -t[1])[:5]),
        }
    greedy, exploring = totals["bandit"], totals["explore"]
    ratio = {
        key: exploring[key] / greedy[key] if exploring[key] and greedy[key] else None
        for key in ("rate", "rate_second_half")
    }
    return {
        "n_events": n_events,
        "n_offers": n_offers,
        "explore_vs_greedy": ratio,
        "block": block,
        "delay_offers": delay,
        "alpha": alpha,
        "epsilon": epsilon,
        "decide_us_per_offer": 1e6 * decide_s / max(1, sum(len(s) for s in series.values())),
        "curves": curves,
        "totals": totals,
    }


def time_bandits(n_rounds: int, n_arms: int, d: int, seed: int) -> dict[str, float]:
    """Microseconds per decision + update: our LinUCB vs River's LinUCBDisjoint."""
    from river import bandit as river_bandit

    rng = np.random.default_rng(seed)
    arms = [f"a{i}" for i in range(n_arms)]
    X = rng.random((n_rounds, n_arms, d))
    ours = LinUCB(d, alpha=0.3)
    t = time.perf_counter()
    for i in range(n_rounds):
        k = ours.select(arms, X[i])
        ours.learn_one(arms[k], X[i, k], float(rng.random() < 0.1))
    ours_us = 1e6 * (time.perf_counter() - t) / n_rounds
    # River's LinUCB takes one shared context dict for all arms
    theirs = river_bandit.LinUCBDisjoint(alpha=0.3, seed=seed)
    ctx = [{f"f{j}": float(v) for j, v in enumerate(X[i, 0])} for i in range(n_rounds)]
    t = time.perf_counter()
    for i in range(n_rounds):
        arm = theirs.pull(arms, context=ctx[i])
        theirs.update(arm, ctx[i], float(rng.random() < 0.1))
    river_us = 1e6 * (time.perf_counter() - t) / n_rounds
    return {"ours_us": ours_us, "river_us": river_us, "n_arms": n_arms, "d": d}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=600_000)
    ap.add_argument("--customers", type=int, default=3_000)
    ap.add_argument("--delay", type=int, default=500, help="offers before an outcome is learned")
    ap.add_argument("--block", type=int, default=4_000, help="offers per point of the curve")
    ap.add_argument("--alpha", type=float, default=0.3)
    ap.add_argument("--epsilon", type=float, default=0.1, help="the exploring bandit's")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args(argv)
    if args.quick:
        args.events, args.block, args.delay = 30_000, 500, 100
    t0 = time.perf_counter()
    res = run_policies(
        args.events, args.customers, args.delay, args.block, args.seed, args.alpha, args.epsilon
    )
    timing = time_bandits(300 if args.quick else 3_000, 8, 18, args.seed)
    doc = {"env": environment(), "args": vars(args) | {"out": str(args.out)}, **res}
    doc["bandit_timing"] = timing
    doc["wall_s"] = time.perf_counter() - t0
    rows = [
        {
            "arm": arm,
            "offers": t["offers"],
            "conversions": t["conversions"],
            "rate": None if t["rate"] is None else 100 * t["rate"],
            "rate 2nd half": None if t["rate_second_half"] is None else 100 * t["rate_second_half"],
        }
        for arm, t in res["totals"].items()
    ]
    md = (
        f"## Offer policy: conversion rate (%), {res['n_offers']} offers from "
        f"{args.events} simulated events, outcomes learned {args.delay} offers late\n\n"
        + markdown_table(rows, ["arm", "offers", "conversions", "rate", "rate 2nd half"])
        + f"\n\nExploring bandit (epsilon-greedy, epsilon {args.epsilon}) / greedy bandit "
        f"conversion: {_ratio(res['explore_vs_greedy']['rate'])} overall, "
        f"{_ratio(res['explore_vs_greedy']['rate_second_half'])} in the second half"
        + f"\n\nLinUCB decision+update, {timing['n_arms']} arms, d={timing['d']}: ours "
        f"{timing['ours_us']:.0f} us, River LinUCBDisjoint {timing['river_us']:.0f} us"
    )
    write(args.out, "offer_policy", doc, md)
    n_blocks = len(res["curves"]["bandit"])
    x = [(i + 1) * args.block for i in range(n_blocks)]
    plot_lines(
        args.out / "offer_policy.png",
        x,
        {a: [float("nan") if v is None else 100 * v for v in res["curves"][a]] for a in ARMS},
        "Conversion rate over time: bandits (greedy, exploring) vs fixed rule vs control",
        "offers made (all arms)",
        "conversion rate (%) per block",
    )
    return 0


def _ratio(r: float | None) -> str:
    return "-" if r is None else f"{r:.3f}"


if __name__ == "__main__":
    raise SystemExit(main())
