"""Pure unit tests of the window/bucket arithmetic, the feature names and the key helper."""

from __future__ import annotations

import pytest

from features.events import Click, Feedback, Purchase, PurchaseItem, content_digest
from features.keys import CustomerKeys, customer_key
from features.settings import FeatureSettings
from features.store import (
    FEATURE_NAMES,
    PURCHASE_LINE_WEIGHT,
    WINDOWS,
    Window,
    _encode,
    _render_scripts,
)

# 2023-11-15T00:00:00Z: aligned to every bucket width (60, 300, 3600, 86400).
T0 = 1_700_006_400.0


def test_windows_are_the_agreed_ones() -> None:
    assert [(w.name, w.bucket_s * w.buckets) for w in WINDOWS] == [
        ("5m", 300),
        ("1h", 3600),
        ("24h", 86_400),
        ("30d", 30 * 86_400),
    ]


@pytest.mark.parametrize("window", WINDOWS, ids=lambda w: w.name)
def test_window_edges_are_bucket_aligned(window: Window) -> None:
    span = window.bucket_s * window.buckets
    # At a bucket boundary the window covers exactly the (buckets - 1) previous buckets
    # plus the current one: [ref - span + bucket_s, ref + bucket_s).
    assert window.start(T0) == T0 - span + window.bucket_s
    assert window.end(T0) == T0 + window.bucket_s
    # Just before the next boundary it covers (almost) the full span.
    late = T0 + window.bucket_s - 0.5
    assert window.start(late) == window.start(T0)
    assert late - window.start(late) == pytest.approx(span - 0.5)


@pytest.mark.parametrize("window", WINDOWS, ids=lambda w: w.name)
def test_contains_matches_start_and_end(window: Window) -> None:
    ref = T0 + 7.25 * window.bucket_s
    start, end = window.start(ref), window.end(ref)
    assert window.contains(start, ref)
    assert not window.contains(start - 0.001, ref)
    assert window.contains(ref, ref)
    assert window.contains(end - 0.001, ref)  # later in ref's own bucket still counts
    assert not window.contains(end, ref)


def test_bucket_is_floor_for_negative_and_fractional_times() -> None:
    w = Window("x", 60, 5)
    assert w.bucket(59.999) == 0
    assert w.bucket(60.0) == 1
    assert w.bucket(-0.5) == -1


def test_feature_names_order_and_count() -> None:
    assert len(FEATURE_NAMES) == 29
    assert len(set(FEATURE_NAMES)) == 29
    assert FEATURE_NAMES[:4] == ("clicks_5m", "clicks_1h", "clicks_24h", "clicks_30d")
    assert FEATURE_NAMES[12:16] == ("spend_5m", "spend_1h", "spend_24h", "spend_30d")
    assert FEATURE_NAMES[16:] == (
        "secs_since_last_click",
        "secs_since_last_purchase",
        "avg_order_value",
        "cart_value",
        "cart_items",
        "session_clicks",
        "session_carts",
        "session_checkouts",
        "feedback_count",
        "rating_avg",
        "sentiment_avg",
        "category_affinity",
        "n_categories",
    )


def test_encode_records() -> None:
    out: list[object] = []
    e1 = Click("e1", "c", "s", T0, "add_to_cart", "i", "shoes", price=9.5)
    _encode(e1, None, out)
    assert out == ["e1", "c", T0, "s", "add_to_cart", 9.5, "", content_digest(e1), 1, "shoes", 3.0]
    out = []
    items = (
        PurchaseItem("i1", "hats", 5.0, 1),
        PurchaseItem("i2", "shoes", 20.0, 2),
        PurchaseItem("i3", "hats", 1.0, 1),
    )
    e2 = Purchase("e2", "c", None, T0, "o", items, 46.0, "EUR")
    _encode(e2, None, out)
    # The most valuable line's category comes first (it is the event's own category).
    w = PURCHASE_LINE_WEIGHT
    digest = content_digest(e2)
    assert out == ["e2", "p", T0, "", "", 46.0, "", digest, 2, "shoes", w, "hats", 2 * w]
    out = []
    e3 = Feedback("e3", "c", T0, "survey", rating=None)
    _encode(e3, -0.25, out)
    assert out == ["e3", "f", T0, "", "", "", -0.25, content_digest(e3), 0]


def test_scripts_bake_in_the_settings() -> None:
    a = _render_scripts(FeatureSettings())
    b = _render_scripts(FeatureSettings(top_categories=3, dedup_ttl_hours=1.0))
    assert "local TOP_K = 5\n" in a["apply"]
    assert "local TOP_K = 3\n" in b["apply"]
    assert "local HORIZON_S = 3600.0\n" in b["apply"]
    assert "local WIN_W = {60, 300, 3600, 86400}\n" in a["apply"]
    assert a["apply"] != b["apply"]


def test_customer_key_uses_a_hash_tag() -> None:
    assert customer_key("ss", "c42", "state") == "ss:{c42}:state"
    assert CustomerKeys.of("p", "a}b").all == (
        "p:{a}b}:state",
        "p:{a}b}:seen",
        "p:{a}b}:offers",
        "p:{a}b}:sums",
    )
    with pytest.raises(ValueError, match="brace-free"):
        customer_key("s{s", "c", "state")
    with pytest.raises(ValueError, match="customer_id"):
        customer_key("ss", "", "state")
