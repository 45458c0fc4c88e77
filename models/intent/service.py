"""The session-intent model as the stream uses it: one object the agent calls per batch.

``IntentService`` owns the micro-batcher (device-resident session states, rebuilt from the
Redis session log after a rebalance or eviction), the completed-session buffer and the
background fine-tuner. The agent calls ``score`` with a batch's clicks and their customer
features, ``on_purchase`` for purchases, ``expire`` with the event clock, and ``reset`` when
partitions are revoked.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from features.events import Click, Purchase
from features.session_log import Retry, SessionLog
from models.intent.batcher import IntentBatcher
from models.intent.model import IntentEncoder, IntentNet, IntentStep, SessionKey, session_label
from models.intent.train import OnlineTrainer, load_checkpoint
from models.settings import IntentSettings

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
        # Steps of sessions still open, for the fine-tuner once their label is known.
        self._open: OrderedDict[SessionKey, list[IntentStep]] = OrderedDict()
        self.completed = 0

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
        if settings.checkpoint_path is not None:
            loaded = load_checkpoint(settings.checkpoint_path, key=key)
            batcher = loaded.batcher(settings, log=log)
            logger.info("intent model %s loaded from %s", loaded.version, settings.checkpoint_path)
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
        for step in steps:
            self._remember(step)
        return await self.batcher.astep_many(steps)

    def on_purchase(self, purchase: Purchase) -> None:
        """A purchase closes its session with the label ``purchase``."""
        if purchase.session_id is None:
            return
        key = (purchase.customer_id, purchase.session_id)
        self.batcher.end_session(key)
        self._complete(key, purchased=True)

    def expire(self, now: float) -> int:
        """Sessions idle past the timeout end as ``abandon`` or ``browse``."""
        expired = self.batcher.expire(now)
        for key in expired:
            self._complete(key, purchased=False)  # type: ignore[arg-type]
        return len(expired)

    def abandon_rise(self, customer_id: str, session_id: str) -> float:
        return self.batcher.abandon_rise((customer_id, session_id))

    def reset(self) -> int:
        """Forget device states (partitions were revoked); the log rebuilds them on return."""
        return self.batcher.reset()

    def _remember(self, step: IntentStep) -> None:
        key = step.session_key
        steps = self._open.get(key)
        if steps is None:
            steps = self._open[key] = []
            while len(self._open) > self.settings.max_sessions:
                self._open.popitem(last=False)
        else:
            self._open.move_to_end(key)
        if len(steps) < self.settings.replay_events:
            steps.append(step)

    def _complete(self, key: SessionKey, *, purchased: bool) -> None:
        steps = self._open.pop(key, None)
        if not steps:
            return
        label = session_label([s.action for s in steps], purchased=purchased)
        self.trainer.learn_many([steps], [label])
        self.completed += 1
