"""``streamscore bench <name> [options]``: dispatch to one benchmark script.

streamscore bench latency       end-to-end latency at fixed rates vs. a pass-through
streamscore bench throughput    max events/s of 1 and 2 workers, per core; stage breakdown
streamscore bench peers         a naive per-event Faust agent and Quix Streams, same job
streamscore bench memory        worker RSS over many events, Redis bytes per customer
streamscore bench intent        the session-intent LSTM batching benchmark
streamscore bench state         partition-owned state: Redis vs. a Kafka changelog (Faust table)
streamscore bench learning      one model per deployment: AUC, bandit, segments of 1/2/4 workers
streamscore bench cluster       feature-store batches on a 3-master Redis Cluster vs one server
streamscore bench checkpoint    event-loop stall of a checkpoint and a model merge, models at caps
streamscore bench ope           off-policy estimates from the bandit's logs vs true policy values
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

__all__ = ["bench_main"]

_BENCHMARKS = {
    "latency": "benchmarks.latency",
    "throughput": "benchmarks.throughput",
    "peers": "benchmarks.peers",
    "memory": "benchmarks.memory",
    "intent": "benchmarks.intent_batching",
    "state": "benchmarks.state_store",
    "learning": "benchmarks.multi_worker",
    "cluster": "benchmarks.redis_cluster",
    "checkpoint": "benchmarks.checkpoint_stall",
    "ope": "benchmarks.offer_ope",
}


def bench_main(argv: Sequence[str]) -> int:
    argv = list(argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in _BENCHMARKS:
        sys.stdout.write(__doc__ or "")
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    try:
        module = importlib.import_module(_BENCHMARKS[argv[0]])
    except ImportError as exc:
        sys.stderr.write(f"benchmark {argv[0]!r} is not available: {exc}\n")
        return 2
    return int(module.main(argv[1:]) or 0)
