"""Off-policy estimates against ground truth: logs of the exploring bandit, values of others.

A small numpy world: each decision has 2-4 eligible offers, each with its own context; the
true conversion probability of each is known. The logging policy is our LinUCB with
epsilon-greedy exploration, learning online (so its propensities change over the log). The
true value of a target policy on the logged contexts is ``mean_i sum_a pi(a|x_i) p_i(a)``.
"""

from __future__ import annotations

import numpy as np
import pytest

from models.decisioning.bandit import LinUCB
from models.decisioning.decision_log import join_decisions, settled
from models.decisioning.exploration import draw, probabilities
from models.decisioning.ope import ESTIMATORS, Logs, evaluate, reward_model, weight_stats
from models.decisioning.targets import always, bandit_policy, fixed_rule, from_scores, uniform
from models.decisioning.uplift import uplift, wilson

OFFERS = ("a", "b", "c", "d")
D = 5


def simulate(n: int, seed: int, epsilon: float = 0.2) -> tuple[list[dict], np.ndarray, LinUCB]:
    """Decision-log records of an exploring LinUCB, the true conversion probability of every
    eligible offer (n, 4; padded with 0) and the bandit at the end."""
    rng = np.random.default_rng(seed)
    theta = {a: rng.normal(0.0, 0.8, D) for a in OFFERS}
    bias = {"a": -1.0, "b": -1.6, "c": -1.3, "d": -2.0}
    bandit = LinUCB(D, alpha=0.3)
    records, truth = [], np.zeros((n, len(OFFERS)))
    for i in range(n):
        k = int(rng.integers(2, 5))
        eligible = list(rng.permutation(OFFERS)[:k])
        X = np.column_stack([np.ones(k), rng.normal(0.0, 1.0, (k, D - 1))])
        p_true = np.array([1 / (1 + np.exp(-(bias[a] + X[j, 1:] @ theta[a][1:]))) for j, a in
                           enumerate(eligible)])  # fmt: skip
        p = probabilities(bandit.scores(eligible, X), "epsilon_greedy", epsilon)
        j = draw(p, rng.random())
        r = float(rng.random() < p_true[j])
        bandit.learn_one(eligible[j], X[j], r)
        truth[i, :k] = p_true
        records.append(
            {
                "decision_id": str(i),
                "arm": "bandit",
                "eligible": eligible,
                "contexts": X.tolist(),
                "action": eligible[j],
                "propensity": float(p[j]),
                "reward": r,
            }
        )
    return records, truth, bandit


def _targets(logs: Logs) -> dict[str, np.ndarray]:
    return {"fixed": fixed_rule(logs), "uniform": uniform(logs), "always-b": always(logs, "b")}


def test_estimates_from_the_bandits_logs_cover_other_policies_true_values() -> None:
    records, truth, _ = simulate(6_000, seed=3)
    logs = Logs.from_records(records)
    assert logs.n == 6_000 and logs.dropped["deterministic"] == 0
    q = reward_model(logs)
    for name, pi in _targets(logs).items():
        true_value = float((pi * truth).sum(axis=1).mean())
        est = evaluate(logs, pi, q)
        for e in ESTIMATORS:
            assert est[e].covers(true_value), (name, e, true_value, est[e])
            assert est[e].width < 0.08, (name, e, est[e])
        # the reward model explains part of the variance: DR is not wider than IPS
        assert est["dr"].width <= est["ips"].width * 1.05, (name, est)


def test_interval_coverage_over_replications_is_near_nominal() -> None:
    hits = {e: 0 for e in ESTIMATORS}
    bias = {e: [] for e in ESTIMATORS}
    total = 0
    for seed in range(12):
        records, truth, _ = simulate(1_500, seed=100 + seed)
        logs = Logs.from_records(records)
        q = reward_model(logs)
        for pi in _targets(logs).values():
            true_value = float((pi * truth).sum(axis=1).mean())
            est = evaluate(logs, pi, q)
            total += 1
            for e in ESTIMATORS:
                hits[e] += est[e].covers(true_value)
                bias[e].append(est[e].value - true_value)
    for e in ESTIMATORS:
        assert hits[e] / total >= 0.8, (e, hits[e], total)
        assert abs(float(np.mean(bias[e]))) < 0.01, (e, np.mean(bias[e]))


def test_the_final_bandit_and_a_score_file_are_evaluated_too() -> None:
    records, truth, bandit = simulate(4_000, seed=7)
    logs = Logs.from_records(records)
    q = reward_model(logs)
    for pi in (
        bandit_policy(logs, bandit, "greedy"),
        bandit_policy(logs, bandit, "epsilon_greedy", 0.2),
        from_scores(logs, {"a": 3.0, "c": 2.0, "b": 1.0}),
    ):
        assert np.allclose(pi.sum(axis=1), 1.0) and not (pi * ~logs.mask).any()
        true_value = float((pi * truth).sum(axis=1).mean())
        est = evaluate(logs, pi, q)
        assert est["dr"].covers(true_value), (true_value, est)
    # the learned bandit beats a random offer, in truth and in estimate
    greedy, rand = bandit_policy(logs, bandit, "greedy"), uniform(logs)
    assert (greedy * truth).sum(axis=1).mean() > (rand * truth).sum(axis=1).mean()
    assert evaluate(logs, greedy, q)["dr"].value > evaluate(logs, rand, q)["dr"].value
    stats = weight_stats(logs, rand)
    assert 0.8 < stats["mean_weight"] < 1.2 and stats["ess"] > 0


def test_deterministic_and_invalid_decisions_are_left_out() -> None:
    records = [
        {"eligible": ["a", "b"], "action": "a", "propensity": 1.0, "reward": 1.0},  # fixed rule
        {"eligible": ["a"], "action": "a", "propensity": 1.0, "reward": 0.0},  # no choice: kept
        {"eligible": ["a", "b"], "action": "c", "propensity": 0.5, "reward": 0.0},
        {"eligible": ["a", "b"], "action": "a", "propensity": 0.0, "reward": 0.0},
        {"eligible": ["a", "b"], "action": "b", "propensity": 0.5, "reward": 1.0},
    ]
    logs = Logs.from_records(records)
    assert logs.n == 2
    assert logs.dropped == {"invalid": 2, "deterministic": 1, "no_context": 2}
    assert not logs.has_contexts
    with pytest.raises(ValueError, match="no decisions"):
        evaluate(Logs.from_records(records[:1]), np.zeros((0, 1)))


def test_offers_and_outcomes_join_into_log_lines() -> None:
    offers = [
        {"offer_event_id": "o1", "customer_id": "c", "offer_id": "b", "event_ts": 1.0,
         "policy_propensity": 0.45, "eligible": ["a", "b"], "contexts": [[1.0], [2.0]]},
        {"offer_event_id": "o1", "customer_id": "c", "offer_id": "b", "event_ts": 1.0,
         "policy_propensity": 0.45, "eligible": ["a", "b"]},  # a replay: the first one wins
        {"offer_event_id": "o2", "customer_id": "c", "offer_id": "a", "event_ts": 2.0},
        {"offer_event_id": "o3", "customer_id": "c", "offer_id": "a", "event_ts": 3.0,
         "policy_propensity": 0.5, "eligible": ["a", "b"]},
    ]  # fmt: skip
    outcomes = [
        {"offer_event_id": "o1", "converted": True, "revenue": 9.5, "arm": "bandit"},
        {"offer_event_id": "o2", "converted": False, "revenue": 0.0, "arm": "fixed"},
    ]
    lines, counts = join_decisions(offers, outcomes)
    assert counts == {"offers": 3, "outcomes": 2, "no_outcome": 1, "no_propensity": 1}
    assert lines == [
        {
            "decision_id": "o1",
            "customer_id": "c",
            "ts": 1.0,
            "arm": "bandit",
            "eligible": ["a", "b"],
            "action": "b",
            "propensity": 0.45,
            "reward": 1.0,
            "revenue": 9.5,
            "contexts": [[1.0], [2.0]],
        }
    ]


def test_uplift_counts_each_outcome_once_and_its_interval_covers_the_true_difference() -> None:
    rng = np.random.default_rng(5)
    rows = [
        {"offer_event_id": f"b{i}", "arm": "bandit", "converted": bool(rng.random() < 0.14)}
        for i in range(4_000)
    ]
    rows += [
        {"offer_event_id": f"c{i}", "arm": "control", "converted": bool(rng.random() < 0.10)}
        for i in range(1_000)
    ]
    u = uplift(rows + rows[:50])  # re-emitted outcomes change nothing
    assert (u.treatment_n, u.control_n) == (4_000, 1_000)
    assert u.low < 0.04 < u.high and u.low > 0.0
    assert uplift([]).difference is None
    lo, hi = wilson(0, 10)
    assert lo < 1e-9 and 0.2 < hi < 0.35


def test_conversions_in_windows_still_open_are_left_out_of_the_uplift() -> None:
    """A conversion is published at once, a miss when its window closes: read while windows
    are open, the topic holds every conversion but only the older misses."""
    rng = np.random.default_rng(5)
    window, now = 100.0, 1_000.0
    rows = []
    for i in range(4_000):
        arm = "bandit" if i % 4 else "control"
        ts = rng.uniform(0.0, now)
        converted = bool(rng.random() < (0.3 if arm == "bandit" else 0.2))
        if converted or ts + window <= now:  # a miss is published once its window closed
            rows.append({"arm": arm, "converted": converted, "offer_ts": ts})
    biased, kept = uplift(rows), uplift(settled(rows)[0])
    assert biased.treatment_rate is not None and biased.treatment_rate > 0.32
    assert kept.low is not None and kept.high is not None and kept.low <= 0.1 <= kept.high
    assert kept.treatment_rate == pytest.approx(0.3, abs=0.03)
