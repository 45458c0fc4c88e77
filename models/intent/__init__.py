"""The session-intent LSTM: each click steps its session's state, many sessions per batch.

Owns the network and the encoding of a click (``model``), the device-resident slot table of
``(h, c)`` states (``slots``), the micro-batcher (``batcher``), the object the stream calls
per batch (``service``) and training, evaluation and online fine-tuning (``train``).
May import ``models.settings`` and ``features/`` (the event contract and the session log).
"""
