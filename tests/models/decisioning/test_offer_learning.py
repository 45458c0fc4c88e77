"""Contact policy, bandit and arbitration: pure unit tests."""

from __future__ import annotations

import numpy as np

from features.events import Click
from models.decisioning.arbiter import OfferArbiter
from models.decisioning.bandit import LinUCB, bucket
from models.decisioning.catalog import Catalog
from models.decisioning.contact import ContactPolicy
from models.decisioning.outcomes import ContactState, OpenOffer, Resolution
from models.decisioning.policy import ClickContext, OfferPolicy
from models.settings import DecisionSettings

T = 1_700_000_000.0  # 22:13 UTC
CATALOG = Catalog.from_dict(
    {
        "offers": [
            {"offer_id": "a", "name": "A", "kind": "discount", "value": 20,
             "target_categories": ["shoes"]},
            {"offer_id": "b", "name": "B", "kind": "bundle", "value": 10,
             "target_categories": ["shoes"]},
            {"offer_id": "c", "name": "C", "kind": "loyalty", "value": 5},
        ]
    }
)  # fmt: skip


def _click(eid: str = "e1", cid: str = "c1", ts: float = T) -> Click:
    return Click(eid, cid, "s1", ts, "view", "i1", "shoes")


def _ctx(click: Click) -> ClickContext:
    """The click with no features, no top categories, propensity 0.5, segment 0."""
    return ClickContext(click, {}, (), 0.5, 0, None, "v")


def test_quiet_hours_wrap_midnight_in_local_time() -> None:
    p = ContactPolicy(DecisionSettings(quiet_hours_start=22, quiet_hours_end=7))
    assert p.in_quiet_hours(T) and p.in_quiet_hours(T + 8 * 3600)  # 22:13, 06:13
    assert not p.in_quiet_hours(T + 9 * 3600)  # 07:13
    east = ContactPolicy(
        DecisionSettings(quiet_hours_start=22, quiet_hours_end=7, utc_offset_hours=-3.0)
    )
    assert not east.in_quiet_hours(T)  # 19:13 local
    assert not ContactPolicy(DecisionSettings()).in_quiet_hours(T)


def test_blocks_and_per_offer_cap() -> None:
    p = ContactPolicy(DecisionSettings(offer_frequency_cap_hours=2.0))
    state = ContactState()
    assert p.blocked(T, state) is None
    p.note_negative_feedback(T, state)
    assert p.blocked(T + 3600, state) == "negative_feedback"
    assert p.blocked(T + 25 * 3600, state) is None
    assert p.blocked(T, ContactState(suppressed=True)) == "suppressed"
    p.note_offer("a", "e1", T, state)
    assert not p.offer_allowed("a", "e2", T + 3600, state)
    assert p.offer_allowed("a", "e1", T, state), "a replay of the same trigger is allowed"
    assert p.offer_allowed("a", "e3", T + 2 * 3600, state) and p.offer_allowed("b", "e2", T, state)


def test_eligible_ranks_like_decide() -> None:
    policy = OfferPolicy(CATALOG, DecisionSettings())
    x = {"spend_30d": 10.0}
    eligible = policy.eligible(ClickContext(_click(), x, (("shoes", 1.0),), 0.5, 0, None, "v"))
    assert [d.offer_id for d in eligible] == ["a", "b", "c"]
    decided = policy.decide(ClickContext(_click(), x, (), 0.5, 0, None, "v"))
    assert decided.offer_id == eligible[0].offer_id  # type: ignore[union-attr]


def test_control_group_is_stable_and_about_the_configured_share() -> None:
    share = np.mean([bucket(f"c{i}") < 0.05 for i in range(20_000)])
    assert 0.04 < share < 0.06
    assert bucket("c1") == bucket("c1") != bucket("c1", "pick")


def test_arbiter_steps_reasons_and_learning() -> None:
    s = DecisionSettings(control_percent=0.0, bandit_alpha=0.0)
    arbiter = OfferArbiter(OfferPolicy(CATALOG, s), s, n_segments=2)
    first = arbiter.choose(_ctx(_click()), None, [("carts_1h", 1.2)])
    assert first is not None and first.arm == "bandit"
    assert first.decision.reasons[-2:] == ("feature:carts_1h", "arbitration:bandit_ucb")
    # "c" converts, the others never: the greedy bandit switches to it
    for i in range(30):
        for oid in ("a", "b", "c"):
            ctx = first.context
            offer = OpenOffer(f"o{i}{oid}", "c1", oid, (), "bandit", T, T + 1, ctx, "")
            arbiter.learn(Resolution(offer, converted=oid == "c", ts=T))
    assert arbiter.choose(_ctx(_click("e2")), None).decision.offer_id == "c"
    everyone = DecisionSettings(control_percent=100.0, control_no_offer_share=0.0)
    control = OfferArbiter(OfferPolicy(CATALOG, everyone), everyone, n_segments=2)
    picks = {control.choose(_ctx(_click(f"e{i}")), None) for i in range(3)}
    assert all(p is not None and p.arm == "control" for p in picks)
    c = control.choose(_ctx(_click("e9")), None)
    assert c is not None and c.decision.reasons[-1] == "arbitration:control_random"
    fixed_s = DecisionSettings(control_percent=0.0, arbitration="fixed")
    fixed = OfferArbiter(OfferPolicy(CATALOG, fixed_s), fixed_s, n_segments=2)
    got = fixed.choose(_ctx(_click()), None)
    assert got is not None and (got.decision.offer_id, got.arm) == ("a", "fixed")


def test_linucb_rejects_bad_contexts_and_counts() -> None:
    b = LinUCB(3)
    b.learn_one("a", [1.0, 0.0], 1.0)  # wrong shape: ignored
    b.learn_one("a", [1.0, 0.0, 0.0], 1.0)
    assert b.n_learned == 1 and b.arm_stats()["a"]["mean_reward"] == 1.0
