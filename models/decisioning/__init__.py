"""Which offer a click gets, and what became of it.

Owns the offer catalog (``catalog``), the scoring policy (``policy``), the contact rules
(``contact``), arbitration with a control group and a LinUCB bandit (``arbiter``,
``bandit``), and the offer outcome store in Redis: attribution windows, conversions, contact
state (``outcomes``). May import ``models.ids``, ``models.settings`` and ``features/``.
"""
