"""The offer catalog: the shipped default loads, bad files fail with a message that says where."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from models.decisioning.catalog import Catalog, CatalogError, Offer, load_catalog
from models.decisioning.policy import OfferPolicy
from models.settings import DecisionSettings
from streams.simulator import CATEGORIES


def offer(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"offer_id": "o1", "name": "Offer", "kind": "discount", "value": 10.0}
    doc.update(overrides)
    return doc


def test_default_catalog_covers_the_simulator_categories() -> None:
    catalog = Catalog.load()
    assert 8 <= len(catalog) <= 14
    targeted = {c for o in catalog for c in o.target_categories}
    assert targeted == set(CATEGORIES)
    assert any(o.kind == "cart_saver" and o.intent == "abandon" for o in catalog)
    assert any(not o.target_categories for o in catalog)  # some generic offers


def test_default_catalog_is_used_when_settings_have_no_path() -> None:
    policy = OfferPolicy.from_settings(DecisionSettings())
    assert policy.catalog == Catalog.load()


def test_load_from_path(tmp_path: Path) -> None:
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps({"version": 1, "offers": [offer(target_categories=["books"])]}))
    catalog = Catalog.load(path)
    assert [o.offer_id for o in catalog] == ["o1"]
    assert load_catalog(path) == catalog and load_catalog() == Catalog.load()
    assert catalog.get("o1") == Offer(**offer(target_categories=["books"]))
    assert catalog.get("missing") is None
    policy = OfferPolicy.from_settings(DecisionSettings(catalog_path=path))
    assert len(policy.catalog) == 1


def test_defaults_of_an_offer() -> None:
    o = Offer(**offer())
    assert o.target_categories == () and o.segments == ()
    assert o.min_spend_30d == 0.0 and o.max_spend_30d is None
    assert not o.requires_cart and o.intent is None and not o.needs_cart
    assert Offer(**offer(min_cart_value=5)).needs_cart
    assert Offer(**offer(intent="abandon")).needs_cart


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (
            {"version": 1, "offers": [offer(value=0)]},
            "offers[0] (o1).value: Input should be greater than 0",
        ),
        (
            {"version": 1, "offers": [offer(kind="coupon")]},
            "offers[0] (o1).kind: Input should be 'discount'",
        ),
        (
            {"version": 1, "offers": [offer(colour="red")]},
            "offers[0] (o1).colour: Extra inputs are not permitted",
        ),
        (
            {"version": 1, "offers": [offer(), offer(offer_id="o2", min_propensity=1.5)]},
            "offers[1] (o2).min_propensity: Input should be less than or equal to 1",
        ),
        (
            {"version": 1, "offers": [offer(min_spend_30d=100, max_spend_30d=50)]},
            "offers[0] (o1): max_spend_30d 50 is below min_spend_30d 100",
        ),
        (
            {"version": 1, "offers": [offer(segments=[1, 1])]},
            "offers[0] (o1).segments: contains duplicates",
        ),
        ({"version": 1, "offers": [offer(intent="buy")]}, "offers[0] (o1).intent"),
        (
            {"version": 1, "offers": [offer(offer_id="has space")]},
            "offers[0] (has space).offer_id: String should match pattern",
        ),
        ({"version": 1, "offers": [offer(), offer()]}, "duplicate offer_id 'o1'"),
        ({"version": 1, "offers": []}, "offers must not be empty"),
        ({"version": 2, "offers": [offer()]}, "version: Input should be 1"),
        ({"offers": [offer(name=None)]}, "offers[0] (o1).name"),
        ([offer()], "expected a JSON object, got list"),
    ],
)
def test_validation_errors_say_where(doc: Any, message: str) -> None:
    with pytest.raises(CatalogError, match=r"^catalog test: ") as info:
        Catalog.from_dict(doc, source="test")
    assert message in str(info.value)


def test_many_errors_are_summarised() -> None:
    doc = {"offers": [offer(offer_id=f"o{i}", value=-1) for i in range(5)]}
    with pytest.raises(CatalogError, match="and 2 more error"):
        Catalog.from_dict(doc)


def test_bad_json_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="not valid JSON"):
        Catalog.from_json(b"{offers: ", source="x")
    path = tmp_path / "broken.json"
    path.write_text('{"offers": [')
    with pytest.raises(CatalogError, match=r"broken\.json: not valid JSON"):
        Catalog.load(path)
    with pytest.raises(CatalogError, match="cannot read"):
        Catalog.load(tmp_path / "missing.json")


def test_catalog_is_immutable() -> None:
    catalog = Catalog.load()
    with pytest.raises(ValueError, match="frozen"):
        catalog.offers[0].value = 1.0  # type: ignore[misc]
