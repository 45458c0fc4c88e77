"""Benchmark: do off-policy estimates from the bandit's logs match other policies' true values?

One simulated stream per replication (``streams.simulator.Simulator``, the loop of
``benchmarks/offer_policy.py``): the exploring bandit (policy A, the default epsilon-greedy
LinUCB of ``models/decisioning/arbiter.py``, learning ``--delay`` offers late) makes every
offer and logs what the worker logs (eligible offers, their contexts, the propensity); a 5 %
control group gets a random eligible offer. Conversions are drawn from the simulator's hidden
``offer_response``, which also gives the true conversion probability of every eligible offer
of every decision. So the true value of a target policy B on the logged decisions is
``mean_i sum_a pi_B(a|x_i) p_i(a)``, and B is also run on the same clicks (its offer drawn,
its conversion sampled): the "measured" value, with its sampling error.

From A's logs (the bandit arm's decisions) we estimate B's value with IPS, SNIPS and DR
(``models/decisioning/ope.py``) for B = the fixed rule, uniform random, "always" the most
often eligible offer, the bandit's final state (greedy; it learned from these very logs) and
the bandit of mid-run (greedy, on the decisions made after it), and report per estimator and
target the bias, RMSE, mean interval width and coverage of the true value over the
replications; and the bandit's uplift over the control group (Newcombe interval).

    python -m benchmarks.offer_ope            # ~1.5 min: 20 replications of 200,000 events
    python -m benchmarks.offer_ope --quick    # a few seconds (smoke test)

Writes ``offer_ope.json``, ``offer_ope.md`` and ``offer_ope.png`` under ``--out``.
"""

from __future__ import annotations

import argparse
import copy
import math
import random
import time
from collections import Counter, defaultdict, deque
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._report import environment, markdown_table, write
from benchmarks.offer_policy import N_SEGMENTS, Customer
from features.events import Click
from models.decisioning.arbiter import OfferArbiter
from models.decisioning.bandit import LinUCB, bucket
from models.decisioning.catalog import load_catalog
from models.decisioning.ope import ESTIMATORS, Logs, evaluate, reward_model
from models.decisioning.policy import ClickContext, OfferPolicy
from models.decisioning.targets import always, bandit_policy, fixed_rule, uniform
from models.decisioning.uplift import uplift
from models.settings import DecisionSettings
from streams.simulator import Simulator

__all__ = ["log_bandit", "main", "replicate"]


def log_bandit(
    n_events: int, n_customers: int, delay: int, seed: int, epsilon: float, control: float = 0.05
) -> tuple[list[dict[str, Any]], dict[str, np.ndarray], LinUCB, LinUCB, int]:
    """The decision log of the exploring bandit (and a control group) on one simulated
    stream, the true conversion probability of each decision's eligible offers (by decision
    id, eligible order), the bandit at the end, the bandit half-way through the events and
    the number of decisions made by then."""
    sim = Simulator(n_customers, seed=seed, start_ts=1_700_000_000.0, feedback_rate=0.0)
    catalog = load_catalog()
    kinds = {o.offer_id: o.kind for o in catalog.offers}
    targets = {o.offer_id: o.target_categories for o in catalog.offers}
    settings = DecisionSettings(
        control_percent=0.0, bandit_exploration="epsilon_greedy", bandit_epsilon=epsilon
    )
    policy = OfferPolicy(catalog, settings)
    bandit = OfferArbiter(policy, settings, N_SEGMENTS)
    control_s = settings.model_copy(
        update={"control_percent": 100.0, "control_no_offer_share": 0.0}
    )
    controls = OfferArbiter(policy, control_s, N_SEGMENTS, bandit=bandit.bandit)
    rng = random.Random(seed)
    customers: dict[str, Customer] = defaultdict(Customer)
    offered: set[str] = set()
    pending: deque[tuple[int, str, tuple[float, ...], float]] = deque()
    records: list[dict[str, Any]] = []
    truth: dict[str, np.ndarray] = {}
    mid, mid_at = copy.deepcopy(bandit.bandit), 0
    for n, ev in enumerate(sim.events(n_events)):
        if n == n_events // 2:
            mid, mid_at = copy.deepcopy(bandit.bandit), len(records)
        doc = ev.doc
        if doc is None:
            continue
        cid = doc["customer_id"]
        c = customers[cid]
        if not c.observe(ev.topic, doc):
            continue
        action, category = doc["action"], doc["category"]
        if doc["session_id"] in offered:
            continue
        propensity = min(0.9, 0.3 + 0.1 * c.orders)
        segment = min(N_SEGMENTS - 1, int(math.log1p(c.spend) / 1.5))
        click = Click(doc["event_id"], cid, doc["session_id"], doc["ts"], action,
                      doc["item_id"], category, doc.get("price"))  # fmt: skip
        ctx = ClickContext(click, c.features(category), c.top(), propensity, segment, None, "b")
        arm = "control" if bucket(cid) < control else "bandit"
        choice = (controls if arm == "control" else bandit).choose(ctx, None)
        if choice is None:
            continue
        offered.add(doc["session_id"])
        p_true = np.array(
            [
                sim.offer_response(cid, o, targets[o][0] if targets[o] else None, kinds[o])
                for o in choice.eligible
            ]
        )
        k = choice.eligible.index(choice.decision.offer_id)
        reward = float(rng.random() < p_true[k])
        oid = choice.decision.offer_event_id
        truth[oid] = p_true
        records.append(
            {
                "decision_id": oid,
                "customer_id": cid,
                "arm": arm,
                "eligible": list(choice.eligible),
                "contexts": [list(x) for x in choice.contexts],
                "action": choice.decision.offer_id,
                "propensity": choice.propensity,
                "reward": reward,
            }
        )
        pending.append((len(records), choice.decision.offer_id, choice.context, reward))
        while pending and pending[0][0] <= len(records) - delay:
            _, offer, x, r = pending.popleft()
            bandit.bandit.learn_one(offer, x, r)
    return records, truth, bandit.bandit, mid, mid_at


def _truth(logs: Logs, truth: dict[str, np.ndarray]) -> np.ndarray:
    P = np.zeros(logs.mask.shape)
    for i, oid in enumerate(logs.ids):
        P[i, : len(truth[oid])] = truth[oid]
    return P


def _score(
    logs: Logs, P: np.ndarray, pi: np.ndarray, q: np.ndarray, rng: np.random.Generator
) -> dict[str, Any]:
    """Target ``pi``'s true value on the logs, its value measured by running it on the same
    clicks (its offer drawn, its conversion sampled), and the three estimates."""
    picks = np.array([rng.choice(pi.shape[1], p=row / row.sum()) for row in pi])
    runs = rng.random(logs.n) < P[np.arange(logs.n), picks]
    est = evaluate(logs, pi, q)
    return {
        "true": float((pi * P).sum(axis=1).mean()),
        "measured": float(runs.mean()),
        "measured_se": float(runs.std(ddof=1) / math.sqrt(logs.n)),
        "decisions": logs.n,
        **{e: est[e].as_dict() for e in ESTIMATORS},
    }


def replicate(
    n_events: int, n_customers: int, delay: int, seed: int, epsilon: float
) -> dict[str, Any]:
    """One replication: estimates, true and measured values of each target."""
    records, truth, final, mid, mid_at = log_bandit(n_events, n_customers, delay, seed, epsilon)
    logs = Logs.from_records(r for r in records if r["arm"] == "bandit")
    P = _truth(logs, truth)
    common = Counter(a for r in records for a in r["eligible"]).most_common(1)[0][0]
    targets = {
        "fixed rule": fixed_rule(logs),
        "uniform random": uniform(logs),
        "always the most eligible offer": always(logs, common),
        "final bandit (greedy)": bandit_policy(logs, final, "greedy"),
    }
    q = reward_model(logs)
    rng = np.random.default_rng(seed + 1)
    out = {name: _score(logs, P, pi, q, rng) for name, pi in targets.items()}
    # the bandit of mid-run, on the decisions made after it (none it was trained on)
    late = Logs.from_records(r for r in records[mid_at:] if r["arm"] == "bandit")
    if late.n > 1:
        pi = bandit_policy(late, mid, "greedy")
        out["mid-run bandit (greedy), later decisions"] = _score(
            late, _truth(late, truth), pi, reward_model(late), rng
        )
    rows = [
        {"arm": r["arm"], "converted": r["reward"] > 0, "customer_id": r["customer_id"]}
        for r in records
    ]
    # what the bandit adds over a random eligible offer, on the bandit's own decisions
    true_uplift = float(P[np.arange(logs.n), logs.chosen].mean()) - out["uniform random"]["true"]
    return {
        "seed": seed,
        "decisions": logs.n,
        "most_eligible_offer": common,
        "control_decisions": sum(1 for r in records if r["arm"] == "control"),
        "logged_value": float(logs.reward.mean()),
        "logged_true_value": float(P[np.arange(logs.n), logs.chosen].mean()),
        "min_propensity": float(logs.propensity.min()),
        "targets": out,
        "uplift": uplift(rows).as_dict(),
        "uplift_newcombe": uplift(rows, method="newcombe").as_dict(),
        "true_uplift": true_uplift,
    }


def summarise(reps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per target and estimator over the replications: bias, RMSE, mean width, coverage."""
    rows = []
    for name in reps[0]["targets"]:
        for e in ESTIMATORS:
            err = np.array(
                [r["targets"][name][e]["value"] - r["targets"][name]["true"] for r in reps]
            )
            width = [r["targets"][name][e]["high"] - r["targets"][name][e]["low"] for r in reps]
            covered = sum(
                r["targets"][name][e]["low"]
                <= r["targets"][name]["true"]
                <= r["targets"][name][e]["high"]
                for r in reps
            )
            rows.append(
                {
                    "target": name,
                    "estimator": e.upper(),
                    "true value": float(np.mean([r["targets"][name]["true"] for r in reps])),
                    "bias": float(err.mean()),
                    "rmse": float(np.sqrt((err**2).mean())),
                    "ci width": float(np.mean(width)),
                    "coverage": f"{covered}/{len(reps)}",
                }
            )
    return rows


def summarise_uplift(reps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The uplift's intervals over the replications: cluster-robust and Newcombe."""
    rows = []
    for key, label in (("uplift", "cluster-robust by customer"), ("uplift_newcombe", "Newcombe")):
        est = np.array([r[key]["difference"] for r in reps])
        true = np.array([r["true_uplift"] for r in reps])
        covered = sum(r[key]["low"] <= r["true_uplift"] <= r[key]["high"] for r in reps)
        rows.append(
            {
                "interval": label,
                "true uplift": float(true.mean()),
                "estimate": float(est.mean()),
                "bias": float((est - true).mean()),
                "ci width": float(np.mean([r[key]["high"] - r[key]["low"] for r in reps])),
                "coverage": f"{covered}/{len(reps)}",
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=200_000, help="per replication")
    ap.add_argument("--customers", type=int, default=3_000)
    ap.add_argument("--delay", type=int, default=500, help="offers before an outcome is learned")
    ap.add_argument("--epsilon", type=float, default=0.1, help="the logging bandit's")
    ap.add_argument("--replications", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args(argv)
    if args.quick:
        args.events, args.replications, args.delay = 20_000, 2, 100
    t0 = time.perf_counter()
    reps = [
        replicate(args.events, args.customers, args.delay, args.seed + i, args.epsilon)
        for i in range(args.replications)
    ]
    rows = summarise(reps)
    up_rows = summarise_uplift(reps)
    doc = {
        "env": environment(),
        "args": vars(args) | {"out": str(args.out)},
        "summary": rows,
        "uplift_summary": up_rows,
        "replications": reps,
        "wall_s": time.perf_counter() - t0,
    }
    u = reps[0]["uplift"]
    pct = [100 * (u[k] or 0.0) for k in ("difference", "low", "high")]
    md = (
        f"## Off-policy evaluation against ground truth: {args.replications} replications of "
        f"{args.events} simulated events, ~{int(np.mean([r['decisions'] for r in reps]))} "
        f"decisions of the exploring bandit (epsilon {args.epsilon}) each\n\n"
        + markdown_table(
            [r | {k: 100 * r[k] for k in ("true value", "bias", "rmse", "ci width")} for r in rows],
            ["target", "estimator", "true value", "bias", "rmse", "ci width", "coverage"],
        )
        + "\n\nValues in conversion points (%); bias and RMSE of the estimate against the true "
        "value on the logged decisions, mean width of the 95 % interval (normal, CLT), and how "
        "many replications' intervals held the true value.\n\n"
        "### The bandit's uplift over the control group\n\n"
        + markdown_table(
            [
                r | {k: 100 * r[k] for k in ("true uplift", "estimate", "bias", "ci width")}
                for r in up_rows
            ],
            ["interval", "true uplift", "estimate", "bias", "ci width", "coverage"],
        )
        + f"\n\nReplication 1: {pct[0]:+.2f} points [{pct[1]:+.2f}, {pct[2]:+.2f}] "
        f"(cluster-robust), {reps[0]['uplift']['treatment_n']} bandit vs "
        f"{reps[0]['uplift']['control_n']} control offers "
        f"({reps[0]['uplift']['control_customers']} control customers); true uplift "
        f"{100 * reps[0]['true_uplift']:+.2f} points (the bandit's offers vs a random eligible "
        "offer on the same decisions)."
    )
    write(args.out, "offer_ope", doc, md)
    _plot(args.out / "offer_ope.png", reps[0])
    return 0


def _plot(path: Path, rep: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rep["targets"])
    fig, ax = plt.subplots(figsize=(9, 1.5 + 0.8 * len(names)))
    for j, e in enumerate(ESTIMATORS):
        for i, name in enumerate(names):
            t = rep["targets"][name][e]
            lo, hi = 100 * (t["value"] - t["low"]), 100 * (t["high"] - t["value"])
            ax.errorbar(100 * t["value"], i + (j - 1) * 0.2, xerr=[[lo], [hi]], fmt="o",
                        color=f"C{j}", capsize=3, label=e.upper() if i == 0 else None)  # fmt: skip
    for i, name in enumerate(names):
        t = rep["targets"][name]
        ax.plot([100 * t["true"]] * 2, [i - 0.4, i + 0.4], color="k", lw=2,
                label="true value" if i == 0 else None)  # fmt: skip
        ax.plot(100 * t["measured"], i + 0.35, "kx", label="measured (run)" if i == 0 else None)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlabel("conversion rate (%)")
    ax.set_title("Estimates from the bandit's logs vs true values (replication 1)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
