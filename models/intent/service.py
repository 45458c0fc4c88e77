"""The session-intent model as the stream uses it: one object the agent calls per batch.

``IntentService`` owns the micro-batcher (device-resident session states, rebuilt from the
Redis session log after a rebalance or eviction), the completed-session buffer and the
background fine-tuner. The agent calls ``score`` with a batch's clicks and their customer
features, ``on_purchase`` for purchases, ``expire`` with the event clock, and ``reset`` when
partitions are revoked.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from features.events import Click, Purchase
from features.session_log import Retry, SessionLog
from models.intent.batcher import IntentBatcher
from models.intent.model import IntentEncoder, IntentNet, IntentStep, SessionKey, session_label
from models.intent.train import OnlineTrainer, load_checkpoint
from models.settings import IntentSettings
from models.shared import SEP, SharedState

__all__ = ["IntentService", "customer_inputs"]

logger = logging.getLogger(__name__)

# The intent model's customer inputs, from the feature store's names. Training computes the
# same quantities point-in-time from the events file (models/intent/train.py).
_CUSTOMER_INPUTS = {"prior_orders": "purchases_30d", "prior_spend": "spend_30d"}


def customer_inputs(features: Mapping[str, float]) -> dict[str, float]:
    """Map the store's feature vector onto the intent model's customer inputs.

    >>> customer_inputs({"purchases_30d": 2.0, "spend_30d": 80.0, "clicks_30d": 9.0})
    {'prior_orders': 2.0, 'prior_spend': 80.0}
    """
    return {name: float(features.get(source, 0.0)) for name, source in _CUSTOMER_INPUTS.items()}


class IntentService:
    """Batched, stateful intent scoring plus online fine-tuning on completed sessions."""

    def __init__(
        self,
        batcher: IntentBatcher,
        settings: IntentSettings,
        *,
        checkpoint_dir: Path | None = None,
        key: bytes | None = None,
    ) -> None:
        self.batcher = batcher
        self.settings = settings
        self.trainer = OnlineTrainer(batcher, settings, checkpoint_dir=checkpoint_dir, key=key)
        self.completed = 0  # sessions handed to the fine-tuner

    @classmethod
    def create(
        cls,
        settings: IntentSettings,
        redis_client: Any,
        *,
        key_prefix: str,
        key: bytes,
        checkpoint_dir: Path | None = None,
        retry: Retry | None = None,
    ) -> IntentService:
        """Load the configured checkpoint, or start from an untrained model.

        ``retry`` carries the session log's round trips through Redis outages (the feature
        store's ``with_retry``).
        """
        log = SessionLog(
            redis_client,
            prefix=key_prefix,
            max_events=settings.replay_events,
            ttl_s=settings.session_log_ttl_minutes * 60.0,
            retry=retry,
        )
        path = settings.checkpoint_path
        if (
            path is None
            and checkpoint_dir is not None
            and (checkpoint_dir / "latest.json").exists()
        ):
            path = checkpoint_dir  # this worker's last fine-tuned weights
        if path is not None:
            loaded = load_checkpoint(path, key=key)
            batcher = loaded.batcher(settings, log=log)
            logger.info("intent model %s loaded from %s", loaded.version, path)
        else:
            encoder = IntentEncoder(
                category_buckets=settings.category_buckets,
                item_buckets=settings.item_buckets,
                customer_features=settings.customer_features,
            )
            # Seeded without touching the global RNG: every worker of a group starts from the
            # same weights, so a session rebuilt on another worker gets the same intent.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(settings.init_seed)
                net = IntentNet(
                    encoder.n_numeric,
                    category_buckets=settings.category_buckets,
                    item_buckets=settings.item_buckets,
                    hidden_size=settings.hidden_size,
                )
            batcher = IntentBatcher(net, encoder, settings, log=log, version="untrained")
            logger.warning(
                "no intent checkpoint configured (STREAMSCORE_INTENT__CHECKPOINT_PATH): starting "
                "untrained; it learns online from completed sessions"
            )
        return cls(batcher, settings, checkpoint_dir=checkpoint_dir, key=key)

    @property
    def version(self) -> str:
        return self.batcher.version

    def shared_state(self) -> SharedState:
        """The serving weights (fine-tuning runs merge as summed updates) and how many
        fine-tuning runs the deployment has swapped in."""
        state: SharedState = {
            f"intent.w{SEP}{name}": t.numpy().astype(np.float64)
            for name, t in self.batcher.state_dict_copy().items()
            if t.is_floating_point()
        }
        state["intent.finetunes"] = float(self.trainer.accepted)
        return state

    def weights_digest(self) -> str:
        """SHA-256 of the serving weights: equal on workers that serve the same LSTM."""
        digest = hashlib.sha256()
        for name, t in sorted(self.batcher.state_dict_copy().items()):
            digest.update(name.encode())
            digest.update(t.numpy().tobytes())
        return digest.hexdigest()

    def load_shared_state(self, state: Mapping[str, Any]) -> None:
        head = f"intent.w{SEP}"
        own = self.batcher.state_dict_copy()
        weights = {
            name: torch.from_numpy(np.asarray(state[head + name])).to(t.dtype)
            if head + name in state
            else t
            for name, t in own.items()
        }
        accepted = round(float(state.get("intent.finetunes", 0.0)))
        self.trainer.accepted = accepted
        if all(torch.equal(weights[k], own[k]) for k in own):
            return
        root = self.batcher.version.split("+")[0]
        self.batcher.swap_weights(weights, f"{root}+ft{accepted}" if accepted else root)

    async def score(
        self, clicks: Sequence[Click], features: Sequence[Mapping[str, float]]
    ) -> list[dict[str, float]]:
        """Advance each click's session by one step (one forward pass per micro-batch)."""
        if not clicks:
            return []
        steps = [
            IntentStep.from_click(c, customer_inputs(f))
            for c, f in zip(clicks, features, strict=True)
        ]
        return await self.batcher.astep_many(steps)

    def on_purchase(self, purchase: Purchase) -> SessionKey | None:
        """A purchase closes its session: its state is freed; the caller hands the session to
        ``learn`` with the label ``purchase`` (``Pipeline``, through ``SessionEnds``)."""
        if purchase.session_id is None:
            return None
        key = (purchase.customer_id, purchase.session_id)
        self.batcher.end_session(key)
        return key

    def expire(self, now: float) -> int:
        """Free the states of sessions idle past the timeout (memory only: which sessions
        ended, and their labels, come from ``SessionEnds`` per partition)."""
        return len(self.batcher.expire(now))

    async def learn(self, ended: Sequence[tuple[SessionKey, bool]]) -> int:
        """Hand ended sessions ``(key, purchased)`` to the fine-tuner, each with its steps from
        the Redis session log (whichever worker stepped them); one round trip."""
        log = self.batcher.log
        if not ended or log is None:
            return 0
        records = await log.aexchange([], [k for k, _ in ended])
        sessions, labels = [], []
        for key, purchased in ended:
            steps = [IntentStep.from_record(key, r) for r in records.get(key, [])]
            if steps:
                sessions.append(steps)
                labels.append(session_label([s.action for s in steps], purchased=purchased))
        if sessions:
            self.trainer.learn_many(sessions, labels)
            self.completed += len(sessions)
        return len(sessions)

    def abandon_rise(self, customer_id: str, session_id: str) -> float:
        return self.batcher.abandon_rise((customer_id, session_id))

    def reset(self) -> int:
        """Forget device states (partitions were revoked); the log rebuilds them on return."""
        return self.batcher.reset()
