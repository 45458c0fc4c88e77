"""The bandit's uplift over the control group: difference in conversion rate, with its
confidence interval.

Both groups are offered something: the control group a uniformly random eligible offer
(its "no offer" holdout publishes no offer and so has no outcome), so this is what the
bandit's choice adds over a random eligible offer, per offer made.

The control group is drawn by customer (a hash of the id), and one customer's offers convert
alike, so offers are not independent draws: with customer ids, the interval is cluster-robust
by customer (``method="cluster"``: the variance of each rate from per-customer sums, a normal
interval on the difference). Without them (or with ``method="newcombe"``) it is Newcombe's
hybrid score interval from two Wilson intervals, which treats offers as independent and is too
narrow when customers get several offers each.

>>> rows = [{"arm": "bandit", "converted": i < 30} for i in range(200)]
>>> rows += [{"arm": "control", "converted": i < 10} for i in range(100)]
>>> u = uplift(rows)
>>> u.method, round(u.difference, 3), round(u.low, 3), round(u.high, 3)
('newcombe', 0.05, -0.036, 0.122)
>>> rows = [{"arm": arm, "customer_id": f"{arm}{k}", "converted": k < hits}  # 10 offers each,
...         for arm, n, hits in (("bandit", 40, 12), ("control", 20, 4))  # all alike
...         for k in range(n) for _ in range(10)]
>>> u, v = uplift(rows), uplift(rows, method="newcombe")
>>> u.method, round(u.difference, 2), round(u.low, 2), round(u.high, 2), round(v.low, 2)
('cluster', 0.1, -0.13, 0.33, 0.03)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any, Literal

__all__ = ["Uplift", "uplift", "wilson"]


@dataclass(frozen=True)
class Uplift:
    """Conversion of ``treatment`` minus that of ``control`` with its interval."""

    treatment: str
    control: str
    treatment_n: int
    treatment_conversions: int
    control_n: int
    control_conversions: int
    treatment_rate: float | None
    control_rate: float | None
    difference: float | None
    low: float | None
    high: float | None
    confidence: float
    method: str  # "cluster" (by customer) or "newcombe" (offers independent)
    treatment_customers: int = 0
    control_customers: int = 0

    @property
    def ratio(self) -> float | None:
        if not self.control_rate or self.treatment_rate is None:
            return None
        return self.treatment_rate / self.control_rate

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"ratio": self.ratio}


def wilson(conversions: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion."""
    if n == 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    p = conversions / n
    den = 1.0 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def uplift(
    outcomes: Iterable[Mapping[str, Any] | Any],
    treatment: str = "bandit",
    control: str = "control",
    confidence: float = 0.95,
    method: Literal["auto", "cluster", "newcombe"] = "auto",
) -> Uplift:
    """Uplift of ``treatment`` over ``control`` from offer-outcome records (mappings or
    ``OfferOutcome``s: ``arm``, ``converted``, optionally ``customer_id`` and
    ``offer_event_id``, by which repeats of one outcome count once).

    ``method="auto"``: cluster-robust by customer when every counted record has a
    ``customer_id``, else Newcombe."""
    seen: set[str] = set()
    n = {treatment: 0, control: 0}
    c = {treatment: 0, control: 0}
    per: dict[str, dict[str, list[int]]] = {treatment: {}, control: {}}  # customer -> [n, conv]
    clustered = True
    for o in outcomes:
        get = o.get if isinstance(o, Mapping) else lambda k, _o=o: getattr(_o, k, None)
        arm = get("arm")
        if arm not in n:
            continue
        oid = get("offer_event_id")
        if oid is not None:
            if oid in seen:
                continue
            seen.add(oid)
        hit = 1 if get("converted") else 0
        n[arm] += 1
        c[arm] += hit
        cid = get("customer_id")
        if cid is None:
            clustered = False
        else:
            cell = per[arm].setdefault(str(cid), [0, 0])
            cell[0] += 1
            cell[1] += hit
    if method == "cluster" and not clustered:
        raise ValueError("method='cluster' needs a customer_id on every outcome")
    use = "cluster" if method == "cluster" or (method == "auto" and clustered) else "newcombe"
    n1, c1, n0, c0 = n[treatment], c[treatment], n[control], c[control]
    p1 = c1 / n1 if n1 else None
    p0 = c0 / n0 if n0 else None
    diff = low = high = None
    if p1 is not None and p0 is not None:
        diff = p1 - p0
        if use == "cluster":
            z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
            se = math.sqrt(_cluster_var(per[treatment], p1) + _cluster_var(per[control], p0))
            low, high = diff - z * se, diff + z * se
        else:
            l1, u1 = wilson(c1, n1, confidence)
            l0, u0 = wilson(c0, n0, confidence)
            low = diff - math.sqrt((p1 - l1) ** 2 + (u0 - p0) ** 2)
            high = diff + math.sqrt((u1 - p1) ** 2 + (p0 - l0) ** 2)
    return Uplift(
        treatment, control, n1, c1, n0, c0, p1, p0, diff, low, high, confidence, use,
        len(per[treatment]), len(per[control]),
    )  # fmt: skip


def _cluster_var(cells: Mapping[str, list[int]], rate: float) -> float:
    """Variance of a ratio of sums over customers: ``K/(K-1) sum (y_k - rate m_k)^2 / M^2``."""
    k = len(cells)
    if k < 2:
        return math.inf
    total = sum(m for m, _ in cells.values())
    resid = sum((y - rate * m) ** 2 for m, y in cells.values())
    # at least the binomial variance, so a group with few customers is not overconfident
    return max(k / (k - 1) * resid / total**2, rate * (1.0 - rate) / total)
