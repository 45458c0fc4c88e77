from __future__ import annotations

import time
from collections import defaultdict

import orjson
import pytest

from features.events import ACTIONS, Click, InvalidEvent, Purchase, parse_event
from streams.simulator import CATEGORIES, OUTCOMES, SimEvent, Simulator

START = 1_700_000_000.0


@pytest.fixture(scope="module")
def stream() -> list[SimEvent]:
    return list(Simulator(300, seed=11, start_ts=START).events(30_000))


def _sessions(events: list[SimEvent]) -> dict[str, list[SimEvent]]:
    out: dict[str, list[SimEvent]] = defaultdict(list)
    for e in events:
        if e.topic == "clicks":
            out[e.doc["session_id"]].append(e)
    return out


def test_deterministic_given_seed() -> None:
    def run(seed: int) -> list[bytes]:
        sim = Simulator(200, seed=seed, start_ts=START, malformed_rate=0.01)
        return [e.value for e in sim.events(3_000)]

    assert run(5) == run(5)
    assert run(5) != run(6)


def test_events_continue_across_calls() -> None:
    a = Simulator(100, seed=2, start_ts=START)
    b = Simulator(100, seed=2, start_ts=START)
    chunked = [e.value for e in a.events(500)] + [e.value for e in a.events(500)]
    assert chunked == [e.value for e in b.events(1_000)]


def test_every_event_passes_the_contract(stream: list[SimEvent]) -> None:
    now = time.time()
    kinds = set()
    for e in stream:
        parsed = parse_event(e.topic, e.value, now=now)
        assert orjson.loads(e.value) == e.doc
        assert e.key == parsed.customer_id.encode()
        kinds.add(parsed.kind)
        if isinstance(parsed, Click):
            assert parsed.action in ACTIONS
            assert parsed.category in CATEGORIES
            assert e.session_outcome in OUTCOMES
            assert parsed.item_id.startswith(f"i{CATEGORIES.index(parsed.category)}-")
        else:
            assert e.session_outcome is None
    assert kinds == {"click", "purchase", "feedback"}


def test_simulated_time_and_clock() -> None:
    sim = Simulator(50, seed=1, start_ts=START)
    ts = [e.doc["ts"] for e in sim.events(201, rate=20.0)]
    assert ts[0] == START
    assert ts[-1] == pytest.approx(START + 10.0)
    ticks = iter(range(1_800_000_000, 1_800_000_010))
    ts = [e.doc["ts"] for e in sim.events(10, clock=lambda: float(next(ticks)))]
    assert ts == [float(t) for t in range(1_800_000_000, 1_800_000_010)]


def test_malformed_records_all_rejected() -> None:
    sim = Simulator(50, seed=4, start_ts=START)
    reasons = set()
    for _ in range(500):
        topic, raw = sim.malformed()
        with pytest.raises(InvalidEvent) as info:
            parse_event(topic, raw, now=time.time())
        reasons.add(info.value.reason.split(" ")[0])
    assert len(reasons) >= 8  # variety, not one kind of breakage


def test_malformed_rate_in_stream() -> None:
    events = list(Simulator(50, seed=4, start_ts=START, malformed_rate=0.1).events(2_000))
    bad = [e for e in events if e.doc is None]
    assert 120 < len(bad) < 280
    for e in bad:
        with pytest.raises(InvalidEvent):
            parse_event(e.topic, e.value, now=time.time())


def test_sessions_shape_and_interleaving(stream: list[SimEvent]) -> None:
    sessions = _sessions(stream)
    complete = list(sessions.values())[60:-200]  # skip sessions cut by the window's edges
    lengths = [len(s) for s in complete]
    assert min(lengths) >= 3
    assert max(lengths) <= 40
    for s in complete:
        assert len({e.doc["customer_id"] for e in s}) == 1
        assert len({e.session_outcome for e in s}) == 1
        actions = [e.doc["action"] for e in s]
        has_cart = "add_to_cart" in actions
        assert has_cart == (s[0].session_outcome != "browse")
    first = [e.doc["session_id"] for e in stream[:200] if e.topic == "clicks"]
    assert len(set(first)) > 20  # many sessions interleave
    outcomes = {s[0].session_outcome for s in complete}
    assert outcomes == set(OUTCOMES)


def test_purchase_follows_purchase_sessions(stream: list[SimEvent]) -> None:
    now = time.time()
    sessions = _sessions(stream)
    purchases = [e for e in stream if e.topic == "purchases"]
    assert len(purchases) > 100
    for e in purchases:
        p = parse_event(e.topic, e.value, now=now)
        assert isinstance(p, Purchase)
        clicks = sessions[p.session_id]
        assert clicks[0].session_outcome == "purchase"
        assert clicks[-1].doc["ts"] < p.ts < clicks[-1].doc["ts"] + 300  # minutes later
        assert p.currency == "EUR"
        assert p.total == pytest.approx(sum(i.price * i.quantity for i in p.items), abs=0.01)
        carted = {c.doc["item_id"] for c in clicks if c.doc["action"] == "add_to_cart"}
        assert {i.item_id for i in p.items} <= carted
    bought = {e.doc["session_id"] for e in purchases}
    ended = list(sessions.values())[60:-200]
    for s in ended:
        assert (s[0].doc["session_id"] in bought) == (s[0].session_outcome == "purchase")


def test_order_of_actions_matters(stream: list[SimEvent]) -> None:
    """Same actions, other order: remove->checkout buys, checkout->remove abandons."""
    more = list(Simulator(300, seed=12, start_ts=START).events(60_000))
    bought = {"remove_first": [0, 0], "checkout_first": [0, 0]}
    for s in (_sessions(stream) | _sessions(more)).values():
        actions = [e.doc["action"] for e in s]
        if "remove_from_cart" not in actions or "checkout_start" not in actions:
            continue
        order = (
            "remove_first"
            if actions.index("remove_from_cart") < actions.index("checkout_start")
            else "checkout_first"
        )
        bought[order][0] += s[0].session_outcome == "purchase"
        bought[order][1] += 1
    rate = {k: b / n for k, (b, n) in bought.items()}
    assert min(n for _, n in bought.values()) > 30
    assert rate["remove_first"] > 0.7
    assert rate["checkout_first"] < 0.2


def test_customers_differ_in_propensity(stream: list[SimEvent]) -> None:
    per_customer: dict[str, list[bool]] = defaultdict(list)
    for s in _sessions(stream).values():
        per_customer[s[0].doc["customer_id"]].append(s[0].session_outcome == "purchase")
    rates = [sum(v) / len(v) for v in per_customer.values() if len(v) >= 8]
    assert max(rates) - min(rates) > 0.5


def test_feedback_ratings_and_texts(stream: list[SimEvent]) -> None:
    fb = [e.doc for e in stream if e.topic == "feedback"]
    assert 0.03 < len(fb) / len(stream) < 0.07
    assert any("rating" in d and "text" not in d for d in fb)
    assert any("text" in d and "rating" not in d for d in fb)
    texts = [d["text"] for d in fb if "text" in d]
    assert any(any("\u4e00" <= ch <= "\u9fff" for ch in t) for t in texts)
    assert any(t.isascii() for t in texts)


def test_offer_response_varies_by_customer_and_offer() -> None:
    sim = Simulator(200, seed=3, start_ts=START)
    ids = [f"c{i:06d}" for i in range(200)]
    by_customer = [sim.offer_response(c, "o1", "books", "discount") for c in ids]
    assert all(0.0 < p < 1.0 for p in by_customer)
    assert max(by_customer) - min(by_customer) > 0.2
    c = ids[0]
    by_category = {cat: sim.offer_response(c, "o1", cat, None) for cat in CATEGORIES}
    assert max(by_category.values()) - min(by_category.values()) > 0.05
    by_kind = {k: sim.offer_response(c, "o1", "books", k) for k in ("discount", "loyalty", None)}
    assert len(set(by_kind.values())) == 3
    assert sim.offer_response(c, "o1", "books", None) != sim.offer_response(c, "o2", "books", None)
    assert sim.offer_response(c, "o1", "books", "discount") == by_customer[0]  # deterministic
    with pytest.raises(KeyError):
        sim.offer_response("nobody", "o1", None, None)


@pytest.mark.parametrize(
    "kwargs",
    [{"n_customers": 0}, {"feedback_rate": 1.5}, {"concurrent_sessions": 0}],
)
def test_rejects_bad_arguments(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Simulator(**kwargs)  # type: ignore[arg-type]


def test_generation_is_fast() -> None:
    sim = Simulator(1_000, seed=0, start_ts=START)
    t0 = time.perf_counter()
    for _ in sim.events(50_000):
        pass
    rate = 50_000 / (time.perf_counter() - t0)
    assert rate > 15_000  # ~70k/s on one core; generous for slow CI machines
