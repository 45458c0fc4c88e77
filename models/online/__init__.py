"""River models that learn one event at a time, in the worker's memory.

Owns the purchase propensity model and its delayed labels (``propensity``), customer segments
(``segments``), feedback sentiment and topics (``sentiment``, ``text``, ``replies``) and the
mapping from stored features to model inputs (``transform``). Checkpointed together through
``models.bundle``. May import ``models.base``, ``models.settings`` and ``features/``.
"""
