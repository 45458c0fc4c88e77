"""Worker crash and rebalance: exact features and no lost outputs after failures.

Real ``streamscore worker`` processes on the embedded broker and Valkey. The input is the
simulator's stream; the ground truth is computed from the generated documents
(``faultkit.simulate``) and compared with what Redis holds after the stream drained.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from tests.streams.faultkit import (
    cart_alert_ids,
    compare_features,
    compare_labels,
    produce_all,
    read_features,
    read_labels,
    read_offer_claims,
    read_outputs,
    record,
    reference_run,
    simulate,
    time_past,
    true_labels,
    wait_drained,
    wait_until,
)
from tests.streams.test_pipeline_e2e import _routed

pytestmark = pytest.mark.slow


def _check_outputs(env: dict[str, str], truth: Any, numbers: dict[str, Any]) -> None:
    out = read_outputs(env)
    dup_offers, dup_alerts = out.duplicates()
    claims = asyncio.run(read_offer_claims(env, sorted(truth.features)))
    published = {o["trigger_event_id"] for o in out.offers}
    numbers.update(
        offers=len(out.offers),
        alerts=len(out.alerts),
        duplicate_offers=dup_offers,
        duplicate_alerts=dup_alerts,
        claimed_not_published=len(claims - published),
        duplicates_with_other_content=len(out.differing_copies()),
        dead_letters=len(out.dead),
    )
    errors = out.id_errors(truth)
    assert not errors, f"{len(errors)} outputs with a wrong id: {errors[:5]}; {numbers}"
    assert not out.dead, f"valid input produced dead letters: {out.dead[:3]}; {numbers}"
    assert not out.differing_copies(), f"a replayed offer differs from the original; {numbers}"
    assert claims <= published, (
        f"{len(claims - published)} offers claimed in Redis were never published "
        f"(lost outputs); {numbers}"
    )


@pytest.mark.timeout(240)
def test_kill_9_mid_stream_then_restart_gives_exact_features(
    worker_factory: Any, tmp_path: Path
) -> None:
    n = 20_000
    first = worker_factory()
    env = first.env
    records, truth = simulate(env, n, seed=11)
    first.wait_ready()
    ends = asyncio.run(produce_all(env["STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS"], records))
    killed_at = first.wait_processed(n // 3, timeout=120)["records"]
    assert first.proc is not None
    first.proc.kill()  # SIGKILL: no shutdown, no final commit
    first.proc.wait()

    t_restart = time.monotonic()
    second = worker_factory()
    second.wait_ready()
    recovered_s = wait_until(
        lambda: (second.stats() or {}).get("records", 0) > 0, 60, "first record after restart"
    )
    recovery_s = time.monotonic() - t_restart
    drain_s = wait_drained(env, ends, timeout=150)
    stats = second.stats() or {}
    got = asyncio.run(read_features(env, sorted(truth.features)))
    cmp = compare_features(truth, got)
    numbers: dict[str, Any] = {
        "events_sent": n,
        "valid_events": truth.n_events,
        "killed_after_records": killed_at,
        "replayed_records": stats.get("records", 0) - (n - killed_at),
        "replayed_duplicates_ignored": stats.get("duplicates"),
        "lost": cmp.lost,
        "double_counted": cmp.doubled,
        "customers_wrong": cmp.customers_wrong,
        "recovery_s": round(recovery_s, 1),
        "first_record_after_ready_s": round(recovered_s, 1),
        "drain_after_restart_s": round(time.monotonic() - t_restart, 1),
        "drain_wait_s": round(drain_s, 1),
    }
    _check_outputs(env, truth, numbers)
    record(tmp_path, "kill9", numbers)
    assert cmp.lost == 0 and cmp.doubled == 0 and cmp.customers_wrong == 0, (
        f"features differ from the ground truth: {cmp.summary()}; {cmp.example}; {numbers}"
    )
    assert stats.get("records", 0) >= n - killed_at, f"restarted worker skipped input: {numbers}"


@pytest.mark.timeout(240)
def test_rebalance_when_one_of_two_workers_dies_keeps_features_exact(
    worker_factory: Any, tmp_path: Path
) -> None:
    n = 10_000
    a = worker_factory()
    b = worker_factory()
    env = a.env
    records, truth = simulate(env, n, seed=23)
    a.wait_ready()
    b.wait_ready()
    wait_until(
        lambda: all((w.stats() or {}).get("assigned_partitions", 0) > 0 for w in (a, b)),
        30,
        "both workers assigned",
    )
    ends = asyncio.run(produce_all(env["STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS"], records))
    wait_until(
        lambda: (a.stats() or {}).get("records", 0) + (b.stats() or {}).get("records", 0) >= n // 3,
        120,
        "a third of the stream processed",
    )
    b_records = (b.stats() or {}).get("records", 0)
    a_assigned = (a.stats() or {}).get("assigned_partitions", 0)
    b_assigned = (b.stats() or {}).get("assigned_partitions", 0)
    assert b.proc is not None
    b.proc.kill()  # the harshest leave: no LeaveGroup, the group notices by session timeout
    b.proc.wait()
    t_fail = time.monotonic()
    takeover_s = wait_until(
        lambda: (a.stats() or {}).get("assigned_partitions", 0) >= a_assigned + b_assigned,
        60,
        "survivor owns the dead worker's partitions",
    )
    drain_s = wait_drained(env, ends, timeout=150)
    stats = a.stats() or {}
    got = asyncio.run(read_features(env, sorted(truth.features)))
    cmp = compare_features(truth, got)
    numbers: dict[str, Any] = {
        "events_sent": n,
        "valid_events": truth.n_events,
        "partitions_before": [a_assigned, b_assigned],
        "dead_worker_records_at_kill": b_records,
        "survivor_records": stats.get("records"),
        "replayed_duplicates_ignored": stats.get("duplicates"),
        "lost": cmp.lost,
        "double_counted": cmp.doubled,
        "customers_wrong": cmp.customers_wrong,
        "takeover_s": round(takeover_s, 1),
        "drain_after_failure_s": round(time.monotonic() - t_fail, 1),
        "drain_wait_s": round(drain_s, 1),
    }
    _check_outputs(env, truth, numbers)
    record(tmp_path, "rebalance", numbers)
    assert cmp.lost == 0 and cmp.doubled == 0 and cmp.customers_wrong == 0, (
        f"features differ from the ground truth: {cmp.summary()}; {cmp.example}; {numbers}"
    )


@pytest.mark.timeout(360)
def test_kill_9_mid_stream_then_restart_continues_labels_carts_and_cool_downs(
    worker_factory: Any, unique: Any, tmp_path: Path
) -> None:
    """What waits for event time when the worker dies (clicks for their label, carts for
    their timeout, the cool-downs between alerts) is continued by the restarted worker: every
    click is labeled once, with the label one worker that never crashed gives it, and the cart
    alerts are those of a run without the crash."""
    horizon_s = 300.0
    env_extra = {
        "STREAMSCORE_WORKER__PUBLISH_LABELS": "true",
        "STREAMSCORE_MODELS__PROPENSITY_HORIZON_MINUTES": str(horizon_s / 60),
        "STREAMSCORE_DECISION__CART_ABANDONMENT_MINUTES": str(horizon_s / 60),
        "STREAMSCORE_INTENT__ENABLED": "false",  # no early, model-driven cart alerts
        "STREAMSCORE_WORKER__IDLE_PARTITION_S": "600",  # time moves only with the events
        # no model checkpoint in the run: the restarted worker's count is its own learning
        "STREAMSCORE_MODELS__CHECKPOINT_EVERY_S": "3600",
    }
    first = worker_factory(**env_extra)
    env = first.env
    records, _ = simulate(env, 6_000, seed=37, customers=300, rate=1.0)
    truth = true_labels(env, records, horizon_s)
    push = time_past(records, horizon_s + 60)  # every earlier deadline passes

    # the reference: the same input through a worker that never crashes
    ref = reference_run(worker_factory, unique, tmp_path / "ref", env, env_extra, records, push)
    read_labels(ref.env, len(truth), timeout=120.0)
    want_carts = cart_alert_ids(ref.env)
    ref.stop()

    first.wait_ready()
    bootstrap = env["STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS"]
    asyncio.run(produce_all(bootstrap, records))
    stats = first.wait_processed(3_000, timeout=120)
    assert first.proc is not None
    first.proc.kill()  # SIGKILL: pending labels, carts, uncommitted offsets and all
    first.proc.wait()
    second = worker_factory(**env_extra)
    second.wait_ready()
    asyncio.run(produce_all(bootstrap, _routed(env, push)))
    rows = read_labels(env, len(truth), timeout=120.0)
    cmp = compare_labels(rows, truth)
    got_carts = cart_alert_ids(env)
    after = second.stats() or {}
    cmp.update(
        killed_after_records=stats.get("records"),
        labels_learned_before_kill=stats.get("labels_learned"),
        labels_learned_after_restart=after.get("labels_learned"),
        cart_alerts=len(got_carts),
        cart_alerts_without_crash=len(want_carts),
        cart_alerts_missing=sorted(want_carts - got_carts),
        cart_alerts_extra=sorted(got_carts - want_carts),
    )
    record(tmp_path, "kill9_state", cmp)
    assert cmp["n_missing"] == 0 and cmp["n_wrong"] == 0, cmp
    assert not cmp["unknown"] and cmp["repeats_differing"] == 0, cmp
    # one model lineage (models/sync.py): the restarted worker continues the count of the
    # last merge before the kill; it can fall short of every label (what the first worker
    # learned since that merge is lost), but never exceed it (nothing learned twice)
    learned = int(after.get("labels_learned", 0))
    assert learned <= len(truth), f"labels learned twice: {learned} > {len(truth)}; {cmp}"
    assert want_carts, "the stream should abandon some carts"
    assert got_carts == want_carts, cmp
