"""Which offer a click gets, and what became of it.

Owns the offer catalog (``catalog``), the scoring policy (``policy``), the contact rules
(``contact``), arbitration with a control group and a LinUCB bandit that explores with known
probabilities (``arbiter``, ``bandit``, ``exploration``), the offer outcome store in Redis:
attribution windows, conversions, contact state (``outcomes``), and the evaluation of
decisions: the decision log (``decision_log``), off-policy estimators (``ope``), target
policies (``targets``) and the uplift over the control group (``uplift``). May import
``models.ids``, ``models.settings`` and ``features/``.
"""
