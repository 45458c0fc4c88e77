"""The decision log: one JSON line per offer decision with its outcome, for evaluation.

``streamscore export-decisions`` writes it from the ``offers`` and ``offer-outcomes`` topics
(joined by ``offer_event_id``); ``streamscore evaluate`` reads it, and so can any other tool.
One line per decision:

* ``decision_id``: the offer event id (any unique string);
* ``customer_id``, ``ts`` (event time, seconds), ``arm`` ("bandit", "control", "fixed"):
  optional, ``arm`` is needed for the uplift;
* ``eligible``: the actions the policy chose among, best fixed-rule score first (the fixed
  rule's choice is the first one);
* ``contexts``: one feature vector per eligible action, same order (our bandit's context:
  ``bandit.CONTEXT_NAMES`` then the segment one-hot); or ``context``: one vector for all
  actions; or neither (then the reward model is one mean per action and the bandit cannot be
  re-scored);
* ``action``: the chosen one (in ``eligible``); ``propensity``: the probability with which
  the logging policy chose it, in (0, 1];
* ``reward``: the outcome (here: 1.0 converted, 0.0 not); ``revenue``: optional.

>>> offer = {"offer_event_id": "o1", "customer_id": "c1", "offer_id": "b", "event_ts": 5.0,
...          "policy_propensity": 0.9, "eligible": ["a", "b"], "contexts": [[1.0], [0.5]]}
>>> outcome = {"offer_event_id": "o1", "converted": True, "revenue": 12.5, "arm": "bandit"}
>>> decision_record(offer, outcome)["reward"], decision_record(offer, None)
(1.0, None)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson

__all__ = [
    "decision_record",
    "join_decisions",
    "read_decisions",
    "settled",
    "write_decisions",
]

logger = logging.getLogger(__name__)


def decision_record(offer: Mapping[str, Any], outcome: Mapping[str, Any] | None) -> dict | None:
    """The log line for one published offer and its outcome; None when the outcome is not in
    yet or the offer predates logged propensities."""
    if outcome is None or offer.get("policy_propensity") is None or not offer.get("eligible"):
        return None
    doc: dict[str, Any] = {
        "decision_id": offer["offer_event_id"],
        "customer_id": offer.get("customer_id"),
        "ts": offer.get("event_ts"),
        "arm": outcome.get("arm"),
        "eligible": list(offer["eligible"]),
        "action": offer["offer_id"],
        "propensity": float(offer["policy_propensity"]),
        "reward": 1.0 if outcome.get("converted") else 0.0,
        "revenue": float(outcome.get("revenue") or 0.0),
    }
    if offer.get("contexts"):
        doc["contexts"] = offer["contexts"]
    return doc


def settled(outcomes: Iterable[Mapping[str, Any]]) -> tuple[list[Mapping[str, Any]], int]:
    """The outcomes of offers whose attribution window is known to be closed, and how many
    were left out.

    A conversion is published when it happens, a miss only when the window closes, so while
    windows are open the outcomes on the topic are all conversions: counting them would put
    the conversion rate near 100%. Windows close in event-time order, so every offer made no
    later than the latest offer with a published miss has its outcome, whichever it is; the
    others are left out until their windows close.

    >>> rows = [{"converted": False, "offer_ts": 10.0}, {"converted": True, "offer_ts": 5.0},
    ...         {"converted": True, "offer_ts": 30.0}]
    >>> kept, left = settled(rows)
    >>> [r["offer_ts"] for r in kept], left
    ([10.0, 5.0], 1)
    """
    rows = list(outcomes)
    misses = [float(o["offer_ts"]) for o in rows if not o.get("converted") and "offer_ts" in o]
    if not misses:
        return [], len(rows)
    edge = max(misses)
    kept = [o for o in rows if float(o.get("offer_ts", math.inf)) <= edge]
    return kept, len(rows) - len(kept)


def join_decisions(
    offers: Iterable[Mapping[str, Any]], outcomes: Iterable[Mapping[str, Any]]
) -> tuple[list[dict], dict[str, int]]:
    """Log lines of the offers with an outcome (first record per id wins on both sides: a
    replay re-emits the same ids), and counts of what was left out and why."""
    by_id: dict[str, Mapping[str, Any]] = {}
    for o in outcomes:
        by_id.setdefault(str(o.get("offer_event_id")), o)
    out: list[dict] = []
    seen: set[str] = set()
    counts = {"offers": 0, "outcomes": len(by_id), "no_outcome": 0, "no_propensity": 0}
    for offer in offers:
        oid = str(offer.get("offer_event_id"))
        if oid in seen:
            continue
        seen.add(oid)
        counts["offers"] += 1
        outcome = by_id.get(oid)
        if outcome is None:
            counts["no_outcome"] += 1
            continue
        rec = decision_record(offer, outcome)
        if rec is None:
            counts["no_propensity"] += 1
            continue
        out.append(rec)
    return out, counts


def write_decisions(path: Path, records: Iterable[Mapping[str, Any]]) -> int:
    """Write ``records`` as JSON lines; returns how many."""
    n = 0
    with path.open("wb") as f:
        for r in records:
            f.write(orjson.dumps(r, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")
            n += 1
    return n


def read_decisions(path: Path) -> Iterator[dict]:
    """The records of a decision log; a line that is not a JSON object raises ``ValueError``
    with its line number."""
    with path.open("rb") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                doc = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"{path}:{n}: not JSON: {exc}") from None
            if not isinstance(doc, dict):
                raise ValueError(f"{path}:{n}: not a JSON object")
            yield doc
