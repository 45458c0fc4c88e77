"""A real worker on a real Redis Cluster while the busy customers' slots move to other masters.

Simulated events of a few busy customers are produced in chunks while, at the same time,
each customer's hash slot is migrated to another master (``SETSLOT IMPORTING/MIGRATING``,
``MIGRATE``, ``SETSLOT NODE``). The worker must ride the ``ASK``/``TRYAGAIN``/``MOVED``
replies out: every customer's features equal the ground truth, no record goes to the dead
letters but the simulator's malformed ones, every offer and alert id derives from an input
event and none is published twice with other content, and the retries show in ``/metrics``.
"""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from redis.crc import key_slot

from features.keys import CustomerKeys
from streams.embedded import EmbeddedValkeyCluster
from tests.streams.faultkit import (
    compare_features,
    produce_all,
    read_features,
    read_outputs,
    simulate,
    wait_drained,
)

pytestmark = pytest.mark.timeout(150)


@pytest.fixture
def cluster() -> Iterator[EmbeddedValkeyCluster]:
    with EmbeddedValkeyCluster(masters=3) as c:
        yield c


def _metric(w: Any, name: str) -> float:
    url = f"http://127.0.0.1:{w.web_port}/metrics"
    with urllib.request.urlopen(url, timeout=2.0) as r:
        text = r.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


def test_worker_rides_out_slot_migration(
    worker_factory: Any, cluster: EmbeddedValkeyCluster
) -> None:
    w = worker_factory(
        STREAMSCORE_REDIS__URL=cluster.url,
        STREAMSCORE_REDIS__CLUSTER="true",
        STREAMSCORE_TOPICS__PARTITIONS="2",
    )
    w.wait_ready(timeout=60)
    env = w.env
    records, truth = simulate(env, 3_000, seed=31, customers=8)
    prefix = env["STREAMSCORE_REDIS__KEY_PREFIX"]
    slots = sorted({key_slot(CustomerKeys.of(prefix, c).state.encode()) for c in truth.features})
    masters = cluster.nodes
    bootstrap = env["STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS"]

    # the first chunk lays the customers' keys down; then chunks keep coming while the
    # slots move, one key per MIGRATE, 0.1 s apart
    chunks = [records[i : i + 300] for i in range(0, len(records), 300)]
    ends = asyncio.run(produce_all(bootstrap, chunks[0]))
    w.wait_processed(len(chunks[0]))
    moved: list[int] = []
    processed: list[int] = []  # records the worker had handled when the migration began, ended

    def reshard() -> None:
        processed.append((w.stats() or {}).get("records", 0))
        for slot in slots:
            source = cluster.owner(slot)
            target = masters[(masters.index(source) + 1) % len(masters)]
            moved.append(cluster.migrate_slot(slot, target, keys_per_step=1, pause_s=0.1))
        processed.append((w.stats() or {}).get("records", 0))

    mover = threading.Thread(target=reshard)
    mover.start()
    for chunk in chunks[1:]:
        for tp, end in asyncio.run(produce_all(bootstrap, chunk)).items():
            ends[tp] = max(ends.get(tp, 0), end)
        time.sleep(0.4)
    mover.join(timeout=60)
    assert not mover.is_alive(), "the migration did not finish"
    wait_drained(env, ends, timeout=60)

    got = asyncio.run(read_features(env, sorted(truth.features)))
    cmp = compare_features(truth, got)
    assert (cmp.lost, cmp.doubled, cmp.customers_wrong) == (0, 0, 0), cmp.example
    assert sum(moved) >= len(truth.features), "every busy customer's keys moved"
    # records were waiting for the worker through the whole migration
    assert processed[1] < len(records), processed
    out = read_outputs(env)
    malformed = len(records) - truth.n_events
    assert len(out.dead) == malformed, [d["reason"] for d in out.dead][:5]
    assert out.offers, "the worker made offers during the migration"
    assert not out.id_errors(truth), out.id_errors(truth)[:5]
    assert not out.differing_copies()
    retries = _metric(w, "streamscore_redis_retries_total")
    print(
        f"[cluster e2e] {len(slots)} slots ({sum(moved)} keys) moved while the worker handled "
        f"records {processed[0]}-{processed[1]} of {len(records)}; "
        f"offers={len(out.offers)} alerts={len(out.alerts)} dead={len(out.dead)} "
        f"redis retries={retries}"
    )
    assert retries > 0, "the half-moved slots cost retries, shown in /metrics"
