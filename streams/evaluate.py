"""``streamscore evaluate`` and ``streamscore export-decisions``: do the decisions pay?

``export-decisions`` reads the ``offers`` and ``offer-outcomes`` topics from the beginning
until they are quiet for 2 s (or ``--timeout``), joins them by ``offer_event_id`` and writes
the decision log (``models/decisioning/decision_log.py``: one JSON line per decision with its
outcome).

``evaluate`` reads a decision log (``--input``) or the same topics, and reports

* the value (conversions per offer) of target policies estimated off-policy from the logged
  decisions with IPS, self-normalised IPS and doubly robust estimators, each with a normal
  (CLT) confidence interval (``models/decisioning/ope.py``): the current bandit (from a
  signed checkpoint, ``--checkpoint``, or the deployment's shared snapshot in Redis,
  ``--redis``; with the deployed exploration and greedy), the fixed rule, uniform random,
  "always offer X" (``--always X``) and a file of scores per offer (``--scores``);
* the uplift of the bandit over the control group: the difference in conversion rate per
  offer, with a Newcombe (Wilson) interval (``models/decisioning/uplift.py``).

It writes ``evaluation.md``, ``evaluation.json`` and ``evaluation.png`` under ``--out`` and
prints the table. Logs from the fixed rule alone are deterministic (propensity 1): they hold
nothing about other choices, and the report says so instead of estimating.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from models.decisioning.bandit import LinUCB, context_vector
from models.decisioning.decision_log import (
    join_decisions,
    read_decisions,
    settled,
    write_decisions,
)
from models.decisioning.ope import ESTIMATORS, Logs, evaluate, reward_model, weight_stats
from models.decisioning.targets import always, bandit_policy, fixed_rule, from_scores, uniform
from models.decisioning.uplift import uplift
from streams.settings import Settings

__all__ = ["add_parsers", "evaluate_main", "export_main", "read_outputs", "report"]

logger = logging.getLogger(__name__)


def add_parsers(sub: Any) -> None:
    """The two subcommands' arguments (``streams/cli.py``)."""
    x = sub.add_parser("export-decisions", help="write the decision log (JSONL) from the topics")
    x.add_argument("--out", type=Path, required=True, help="the JSONL file to write")
    x.add_argument("--timeout", type=float, default=30.0, help="seconds to read the topics")

    e = sub.add_parser("evaluate", help="off-policy estimates and uplift with intervals")
    e.add_argument("--input", type=Path, default=None, help="a decision log (default: topics)")
    e.add_argument("--out", type=Path, default=Path("var/evaluation"))
    e.add_argument("--timeout", type=float, default=30.0, help="seconds to read the topics")
    e.add_argument("--checkpoint", type=Path, default=None, help="bandit from this checkpoint")
    e.add_argument("--redis", action="store_true", help="bandit from the shared snapshot")
    e.add_argument("--always", action="append", default=[], help="target: always this offer")
    e.add_argument("--scores", type=Path, default=None, help='target: {"offer_id": score}')
    e.add_argument("--reward", choices=("reward", "revenue"), default="reward")
    e.add_argument("--confidence", type=float, default=0.95)
    e.add_argument("--folds", type=int, default=2, help="cross-fitting folds of the DR model")


# -- reading the topics ----------------------------------------------------------------------


async def read_outputs(
    settings: Settings, timeout: float = 30.0, idle_s: float = 2.0
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every record of the offers and offer-outcomes topics, from the beginning until
    nothing new came for ``idle_s`` (or ``timeout`` passed: a busy deployment keeps
    writing). Not by the end offsets: some Kafka-compatible brokers (Tansu) report them
    per record batch, not per record."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    topics = (settings.topics.offers, settings.topics.offer_outcomes)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
    )
    await consumer.start()
    got: dict[str, list[dict[str, Any]]] = {t: [] for t in topics}
    try:
        await consumer.topics()  # fetches the cluster's metadata
        parts = [
            TopicPartition(t, p)
            for t in topics
            for p in sorted(consumer.partitions_for_topic(t) or ())
        ]
        if not parts:
            return [], []
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        now = time.monotonic()
        deadline, quiet_since = now + timeout, now
        while time.monotonic() < deadline and time.monotonic() - quiet_since < idle_s:
            batches = await consumer.getmany(timeout_ms=200)
            if any(batches.values()):
                quiet_since = time.monotonic()
            for tp, records in batches.items():
                for r in records:
                    try:
                        doc = orjson.loads(r.value or b"")
                    except orjson.JSONDecodeError:
                        continue
                    if isinstance(doc, dict):
                        got[tp.topic].append(doc)
        if time.monotonic() >= deadline:
            logger.warning("read the topics for %.0f s: still busy, stopped there", timeout)
    finally:
        await consumer.stop()
    return got[topics[0]], got[topics[1]]


def export_main(settings: Settings, args: argparse.Namespace) -> int:
    offers, outcomes = asyncio.run(read_outputs(settings, args.timeout))
    outcomes, open_ = settled(outcomes)
    lines, counts = join_decisions(offers, outcomes)
    n = write_decisions(args.out, lines)
    sys.stdout.write(
        f"wrote {n} decisions to {args.out} ({counts['offers']} offers, {counts['outcomes']} "
        f"settled outcomes; left out: {counts['no_outcome']} without a settled outcome yet "
        f"({open_} conversions in windows still open), "
        f"{counts['no_propensity']} without a logged propensity)\n"
    )
    return 0


# -- evaluation ------------------------------------------------------------------------------


def _bandit(settings: Settings, args: argparse.Namespace) -> tuple[LinUCB | None, str]:
    """The bandit to evaluate and where it came from ("" when none was asked for or found).

    ``--redis``: the deployment's snapshot; ``--checkpoint``: that file, or the newest in that
    directory; neither: the newest checkpoint in ``MODELS__CHECKPOINT_DIR`` if one verifies."""
    from models.bundle import ModelBundle
    from models.checkpoint import CheckpointError

    if args.redis:
        return asyncio.run(_bandit_from_redis(settings)), "the deployment's snapshot in Redis"
    path = args.checkpoint
    try:
        if path is None:
            directory = settings.models.checkpoint_dir
            if not directory.is_dir() or not any(directory.glob("models-*.ckpt")):
                return None, ""
            bundle = ModelBundle.load_or_new(directory, settings.models)
            return bundle.bandit, f"the newest checkpoint in {directory}"
        if path.is_dir():
            return ModelBundle.load_or_new(path, settings.models).bandit, f"checkpoints in {path}"
        return ModelBundle.from_checkpoint(path, settings.models).bandit, f"checkpoint {path}"
    except CheckpointError as exc:
        if path is not None:
            raise SystemExit(f"evaluate: {exc}") from None
        logger.warning("no bandit to evaluate: %s", exc)
        return None, ""


async def _bandit_from_redis(settings: Settings) -> LinUCB | None:
    from features.store import FeatureStore
    from models.sync import ModelSync

    store = FeatureStore(settings.redis, settings.features)
    await store.start()
    try:
        sync = ModelSync(
            settings.redis.key_prefix, settings.models.checkpoint_key.get_secret_value().encode()
        )
        await sync.start(store.client)
        fetched = await sync.fetch()
    finally:
        await store.close()
    if fetched is None:
        return None
    _, state, _ = fetched
    d = settings.decision
    n = settings.models.n_segments
    bandit = LinUCB(
        len(context_vector({}, 0.0, 0, n, None, 0.0, False, False, 0.0)),
        alpha=d.bandit_alpha,
        prior=d.bandit_prior,
    )
    bandit.load_shared_state(state)
    return bandit


def _targets(
    logs: Logs, settings: Settings, args: argparse.Namespace, bandit: LinUCB | None
) -> tuple[dict[str, np.ndarray], list[str]]:
    notes: list[str] = []
    targets = {"fixed rule": fixed_rule(logs), "uniform random": uniform(logs)}
    for offer in args.always:
        targets[f"always {offer}"] = always(logs, offer)
    if args.scores is not None:
        scores = json.loads(args.scores.read_text())
        if not isinstance(scores, dict):
            raise SystemExit(f"{args.scores}: expected a JSON object of offer id -> score")
        targets[f"scores {args.scores.name}"] = from_scores(logs, scores)
    if bandit is not None and logs.has_contexts:
        d = settings.decision
        try:
            targets[f"bandit ({d.bandit_exploration})"] = bandit_policy(
                logs, bandit, d.bandit_exploration, d.bandit_epsilon, d.bandit_temperature
            )
            targets["bandit (greedy)"] = bandit_policy(logs, bandit, "greedy")
        except ValueError as exc:
            notes.append(f"bandit not evaluated: {exc}")
    elif bandit is not None:
        notes.append("bandit not evaluated: the decisions carry no contexts")
    return targets, notes


def evaluate_main(settings: Settings, args: argparse.Namespace) -> int:
    if args.input is not None:
        records = list(read_decisions(args.input))
        source = str(args.input)
        outcomes = [
            {"offer_event_id": r.get("decision_id"), "arm": r.get("arm"),
             "converted": bool(r.get("reward")), "customer_id": r.get("customer_id")}
            for r in records
        ]  # fmt: skip
    else:
        offers, outcomes = asyncio.run(read_outputs(settings, args.timeout))
        outcomes, _ = settled(outcomes)  # conversions in open windows would bias the rates
        records, _ = join_decisions(offers, outcomes)
        source = f"topics {settings.topics.offers} + {settings.topics.offer_outcomes}"
    bandit, bandit_source = _bandit(settings, args)
    doc = report(records, outcomes, settings, args, bandit, bandit_source, source)
    write_report(args.out, doc)
    return 0


def report(
    records: Sequence[Mapping[str, Any]],
    outcomes: Sequence[Mapping[str, Any]],
    settings: Settings,
    args: argparse.Namespace,
    bandit: LinUCB | None,
    bandit_source: str,
    source: str,
) -> dict[str, Any]:
    """The evaluation as a JSON-able document."""
    logs = Logs.from_records(records, reward=args.reward)
    up = uplift(outcomes, confidence=args.confidence)
    doc: dict[str, Any] = {
        "source": source,
        "records": len(records),
        "decisions": logs.n,
        "left_out": logs.dropped,
        "reward": args.reward,
        "confidence": args.confidence,
        "interval": "normal (CLT) on the per-decision terms; SNIPS on its linearisation",
        "reward_model": (
            f"per-offer ridge regression on the context, {args.folds}-fold cross-fitted"
        ),
        "bandit_source": bandit_source or None,
        "uplift": up.as_dict(),
        "logged_value": float(logs.reward.mean()) if logs.n else None,
        "targets": {},
        "notes": [],
    }
    if logs.n == 0:
        if logs.dropped.get("deterministic"):
            doc["notes"].append(
                "every decision was made deterministically (propensity 1: the fixed rule or a "
                "greedy bandit): the logs say nothing about other choices, so no policy can be "
                "evaluated off-policy from them"
            )
        else:
            doc["notes"].append("no decisions with a logged propensity and an outcome")
        return doc
    if logs.dropped.get("deterministic"):
        doc["notes"].append(
            f"{logs.dropped['deterministic']} deterministic decisions (the fixed rule) left out: "
            "the estimates are for the randomised decisions (bandit and control group)"
        )
    targets, notes = _targets(logs, settings, args, bandit)
    doc["notes"] += notes
    q = reward_model(logs, folds=max(1, args.folds))
    for name, pi in targets.items():
        est = evaluate(logs, pi, q, confidence=args.confidence)
        doc["targets"][name] = {e: est[e].as_dict() for e in ESTIMATORS} | weight_stats(logs, pi)
    return doc


_METHODS = {
    "cluster": "cluster-robust by customer",
    "newcombe": "Newcombe/Wilson, offers taken as independent",
}


def _ci(e: Mapping[str, Any] | None) -> str:
    if e is None or e.get("value") is None or not math.isfinite(e["value"]):
        return "-"
    return f"{e['value']:.4f} [{e['low']:.4f}, {e['high']:.4f}]"


def write_report(out: Path, doc: Mapping[str, Any]) -> None:
    """``evaluation.json``, ``evaluation.md`` and ``evaluation.png`` under ``out``; prints
    the markdown."""
    out.mkdir(parents=True, exist_ok=True)
    conf = round(100 * doc["confidence"])
    lines = [
        f"## Off-policy evaluation: {doc['decisions']} decisions from {doc['source']}",
        "",
        f"Value = mean {doc['reward']} per offer, {conf} % intervals "
        f"({doc['interval']}); DR reward model: {doc['reward_model']}.",
        "",
        "| target policy | IPS | SNIPS | DR | ESS |",
        "|---|---|---|---|---|",
    ]
    for name, t in doc["targets"].items():
        lines.append(
            f"| {name} | {_ci(t['ips'])} | {_ci(t['snips'])} | {_ci(t['dr'])} | {t['ess']:.0f} |"
        )
    if doc.get("logged_value") is not None:
        lines.append(f"| (logged decisions) | {doc['logged_value']:.4f} | | | |")
    u = doc["uplift"]
    lines.append("")
    if u["difference"] is None:
        lines.append(
            f"Uplift of the bandit over the control group: not measurable ({u['treatment_n']} "
            f"bandit and {u['control_n']} control outcomes)."
        )
    else:
        lines.append(
            f"Uplift of the bandit over the control group: {100 * u['difference']:+.2f} points "
            f"[{100 * u['low']:+.2f}, {100 * u['high']:+.2f}] ({_METHODS[u['method']]}, "
            f"{conf} %): "
            f"bandit {100 * u['treatment_rate']:.2f} % of {u['treatment_n']} offers, control "
            f"{100 * u['control_rate']:.2f} % of {u['control_n']}."
        )
    for note in doc["notes"]:
        lines.append(f"\nNote: {note}")
    if doc.get("bandit_source"):
        lines.append(f"\nBandit from {doc['bandit_source']}.")
    md = "\n".join(lines) + "\n"
    (out / "evaluation.json").write_text(json.dumps(doc, indent=2, default=_plain) + "\n")
    (out / "evaluation.md").write_text(md)
    _plot(out / "evaluation.png", doc)
    sys.stdout.write(md)
    sys.stdout.write(f"\nwrote {out / 'evaluation.md'}, .json, .png\n")


def _plain(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(type(o))


def _plot(path: Path, doc: Mapping[str, Any]) -> None:
    """Each target's estimates with their intervals, and the uplift."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # matplotlib is in the bench/test extras only
        logger.warning("matplotlib not installed: no %s", path)
        return
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.6 * max(1, len(doc["targets"]))))
    names = list(doc["targets"])
    for j, e in enumerate(ESTIMATORS):
        for i, name in enumerate(names):
            t = doc["targets"][name][e]
            if not math.isfinite(t["value"]):
                continue
            y = i + (j - 1) * 0.22
            ax.errorbar(
                t["value"],
                y,
                xerr=[[t["value"] - t["low"]], [t["high"] - t["value"]]],
                fmt="o",
                color=f"C{j}",
                label=e.upper() if i == 0 else None,
                capsize=3,
            )
    if doc.get("logged_value") is not None:
        ax.axvline(doc["logged_value"], color="grey", ls="--", lw=0.8, label="logged")
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlabel(f"estimated value (mean {doc['reward']} per offer)")
    u = doc["uplift"]
    title = "Off-policy estimates"
    if u["difference"] is not None:
        title += f"; bandit - control {100 * u['difference']:+.2f} pts "
        title += f"[{100 * u['low']:+.2f}, {100 * u['high']:+.2f}]"
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if names:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
