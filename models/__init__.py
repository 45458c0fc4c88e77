"""What streamscore learns and decides, one package per concern.

- ``online/``: River models learned event by event (purchase propensity, segments, feedback
  sentiment and topics, suggested replies).
- ``intent/``: the session-intent LSTM: encoding, the stateful micro-batcher, training.
- ``decisioning/``: which offer a click gets (catalog, policy, contact rules, LinUCB arbiter)
  and what became of it (the offer outcome store).
- ``alerts/``: which alerts an event raises (rules, cart watch, churn, purchase anomalies)
  and the cool-down that admits them.

Shared by all four, at this level: ``base`` (the one model protocol), ``settings``, ``ids``
(replay-stable output ids) and ``checkpoint`` (signed files). ``bundle`` is the one module
that composes concerns: the River models a worker checkpoints together.

Imports flow one way: the concern packages import the shared modules and ``features/`` (the
event contract and its Redis building blocks), never each other and never ``streams/``.
"""
