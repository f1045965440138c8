"""Body formats: the trigger payload as each ESP ingestion API wants it."""

from __future__ import annotations

from decimal import Decimal

import pytest

from cdc_sync.core import triggers as t
from cdc_sync.core.bodies import FORMATTERS
from cdc_sync.core.rules import AbandonedCartRule, ProfileUpdatedRule, TriggersConfig

CART = {
    "id": "6f1c0d1e-0000-5000-8000-000000000001", "type": "cart.abandoned", "schema_version": 1,
    "occurred_at": "2026-12-01T10:00:00.000000Z", "profile_id": 7,
    "profile": {"id": 7, "attributes": {"first_name": "Ada", "city": "Berlin", "loyalty_tier": "gold"},
                "identifiers": {"email": ["ada@example.com"]}},
    "cart": {"id": "c1", "items": [{"product_id": "p1", "quantity": 2, "unit_price": "9.50"}],
             "total": "19.00", "currency": "EUR", "last_changed_at": "2026-12-01T09:00:00.000000Z"},
    "caused_by": [{"source": "shop", "position": [1], "committed_at": "2026-12-01T09:00:00.000000Z",
                   "version": "v1"}],
}
UPDATED = {**{k: v for k, v in CART.items() if k != "cart"}, "type": "profile.updated",
           "changes": {"city": {"old_value": "Paris", "new_value": "Berlin"}}}


def test_standard_is_the_payload_as_it_is():
    assert FORMATTERS["standard"](CART) is CART


def test_klaviyo_event_names_the_metric_profile_value_and_unique_id():
    attrs = FORMATTERS["klaviyo_events"](CART)["data"]["attributes"]
    assert attrs["metric"]["data"] == {"type": "metric", "attributes": {"name": "cart.abandoned"}}
    assert attrs["unique_id"] == CART["id"] and attrs["time"] == CART["occurred_at"]
    assert attrs["value"] == 19.0 and attrs["value_currency"] == "EUR"
    profile = attrs["profile"]["data"]["attributes"]
    assert profile == {"external_id": "7", "email": "ada@example.com", "first_name": "Ada",
                       "location": {"city": "Berlin"}, "properties": {"loyalty_tier": "gold"}}
    assert attrs["properties"]["cart"]["items"][0]["product_id"] == "p1"


def test_klaviyo_profile_import_carries_attributes_only():
    doc = FORMATTERS["klaviyo_profiles"](UPDATED)
    assert doc["data"]["type"] == "profile"
    assert doc["data"]["attributes"]["external_id"] == "7"
    assert "changes" not in doc["data"]["attributes"]


@pytest.mark.parametrize("payload", [CART, UPDATED])
def test_braze_users_track_keys_attributes_and_the_event_by_external_id(payload):
    doc = FORMATTERS["braze_users_track"](payload)
    assert doc["attributes"] == [{"external_id": "7", "email": "ada@example.com", "first_name": "Ada",
                                  "city": "Berlin", "loyalty_tier": "gold"}]
    assert doc["events"][0]["external_id"] == "7" and doc["events"][0]["name"] == payload["type"]
    assert doc["events"][0]["properties"]["trigger_id"] == payload["id"]


RULES = TriggersConfig(abandoned_cart=AbandonedCartRule(),
                       profile_updated=ProfileUpdatedRule(watch=["city"], consent_attribute="ok"))
ITEM = t.CartItem("p1", None, 2, Decimal("9.50"))


def cart(**over):
    base = {"cart_id": "c1", "profile_id": 7, "data": {"status": "open"}, "items": (ITEM,), "had_items": True,
            "orders": ()}
    return t.Cart(**{**base, **over})


def consenting(value=True):
    return t.ProfileFacts(7, {"consent_email_marketing": value, "ok": value})


@pytest.mark.parametrize(("the_cart", "profile", "why"), [
    (cart(), consenting(), None),
    (cart(orders=(t.Order("o1", "c1", "v2"),)), consenting(), "checked_out"),
    (cart(data={"status": "checked_out"}), consenting(), "checked_out"),
    (cart(items=()), consenting(), "emptied"),
    (cart(data=None), consenting(), "emptied"),
    (None, consenting(), "cart_gone"),
    (cart(), consenting(False), "no_consent"),
    (cart(), None, "no_consent"),
])
def test_a_cart_is_re_checked_just_before_sending(the_cart, profile, why):
    assert t.send_refusal(CART, the_cart, profile, RULES) == why


def test_a_profile_update_is_re_checked_for_consent():
    assert t.send_refusal(UPDATED, None, consenting(), RULES) is None
    assert t.send_refusal(UPDATED, None, consenting(False), RULES) == "no_consent"
