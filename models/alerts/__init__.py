"""Which alerts an event raises, and which of them reach operators.

Owns the alert value and the per-event rules with the abandoned-cart watch (``rules``),
churn risk with hysteresis (``churn``), unusual purchases (``anomaly``, a River model
checkpointed in ``models.bundle``) and the per customer and type cool-down (``cooldown``).
May import ``models.ids``, ``models.settings`` and ``features/``.
"""
