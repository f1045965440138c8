"""Map stage: ChangeEvents become ProfileMutations as the `mapping:` section declares."""

from __future__ import annotations

import copy
import json
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from cdc_sync.core.errors import MappingError
from cdc_sync.core.events import ChangeEvent, Op, RecordRef
from cdc_sync.core.mapping import (
    AttributeSpec,
    IdentifierSpec,
    MappingConfig,
    Normalizer,
    map_event,
    normalize,
    table_key,
)
from cdc_sync.core.mutations import EntityChange, IdentifierClaim, ProfileMutation, Version

RAW: dict[str, Any] = {
    "unmapped": "dead_letter",
    "ignore": ["shop:public.products", "shop:public.cdc_heartbeat"],
    "sources": {"shop": {"priority": 2}, "crm": {"priority": 1}},
    "tables": {
        "shop:public.users": {
            "identifiers": {"user_id": "id", "email": {"column": "email", "normalize": "email"}},
            "attributes": {
                "first_name": "first_name",
                "city": {"column": "city"},
                "birth_date": {"column": "birth_date", "type": "date"},
            },
        },
        "shop:public.consents": {
            "identifiers": {"user_id": "user_id"},
            "attributes": {"consent_{channel}_{purpose}": {"column": "granted", "type": "boolean"}},
        },
        "shop:public.carts": {
            "identifiers": {"user_id": "user_id", "cart_id": "id"},
            "entity": {"kind": "cart", "id": "id", "columns": ["status", "created_at", "updated_at"]},
        },
        "shop:public.cart_items": {
            "identifiers": {"cart_id": "cart_id"},
            "entity": {
                "kind": "cart_item",
                "id": "id",
                "parent": {"kind": "cart", "column": "cart_id"},
                "columns": ["product_id", "quantity", "unit_price", "added_at"],
            },
        },
        "shop:public.orders": {
            "identifiers": {"user_id": "user_id"},
            "entity": {"kind": "order", "id": "id", "parent": {"kind": "cart", "column": "cart_id"}},
        },
        "crm:crm.contacts": {
            "identifiers": {"email": {"column": "email", "normalize": "email"}, "crm_contact_id": "id"},
            "attributes": {
                "phone": {"column": "phone", "normalize": "phone"},
                "loyalty_tier": "loyalty_tier",
                "loyalty_points": {"column": "loyalty_points", "type": "integer"},
                "preferences": {"column": "preferences", "type": "json"},
            },
        },
    },
    "aggregates": {
        "order_count": {"entity": "order", "function": "count", "where": {"status": ["placed", "paid"]}},
        "lifetime_value": {"entity": "order", "function": "sum", "field": "total"},
        "last_order_at": {"entity": "order", "function": "max", "field": "placed_at"},
    },
}
MAPPING = MappingConfig.model_validate(RAW)

USER = {
    "id": 1,
    "email": " Sally.Thomas@ACME.com ",
    "first_name": "Sally",
    "last_name": "Thomas",
    "phone": "+44 20 7946 0001",
    "city": "London",
    "country": "GB",
    "birth_date": 6647,
    "created_at": "2025-06-02T07:58:12.004512Z",
    "updated_at": "2025-06-02T07:58:12.004512Z",
}
CONSENT = {"id": 3, "user_id": 1, "channel": "email", "purpose": "marketing", "granted": True}
CART = {"id": 7, "user_id": 1, "status": "open", "created_at": "2025-06-02T09:00:00Z", "updated_at": "x"}
CART_ITEM = {
    "id": 70,
    "cart_id": 7,
    "product_id": 3,
    "quantity": 2,
    "unit_price": "24.90",
    "added_at": "2025-06-02T09:00:01Z",
}


def event(
    op: Op,
    table: str = "users",
    *,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    source: str = "shop",
    schema: str | None = "public",
    database: str = "shop",
    unavailable: frozenset[str] = frozenset(),
    key: dict[str, Any] | None = None,
) -> ChangeEvent:
    return ChangeEvent(
        ref=RecordRef(f"{source}.{schema or database}.{table}", 0, 42),
        source=source,
        connector="postgresql" if schema else "mariadb",
        database=database,
        schema=schema,
        table=table,
        op=op,
        key=key if key is not None else {"id": (after or before or {}).get("id")},
        before=before,
        after=after,
        unavailable=unavailable,
        commit_us=1_748_855_647_318_422,
        position=(27114392, 27114680),
        snapshot=op is Op.READ,
        txid="771",
    )


def contact_event(op: Op, **images: dict[str, Any] | None) -> ChangeEvent:
    return event(op, "contacts", source="crm", schema=None, database="crm", **images)  # type: ignore[arg-type]


def mapped(ev: ChangeEvent, mapping: MappingConfig = MAPPING) -> ProfileMutation:
    mutation = map_event(ev, mapping)
    assert mutation is not None
    return mutation


def with_(path: tuple[str, ...], value: Any, raw: dict[str, Any] = RAW) -> dict[str, Any]:
    """A copy of `raw` with the value at `path` replaced (a missing last key is added)."""
    result = copy.deepcopy(raw)
    node = result
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return result


def errors(raw: dict[str, Any]) -> list[tuple[tuple[int | str, ...], str]]:
    with pytest.raises(ValidationError) as info:
        MappingConfig.model_validate(raw)
    return [(error["loc"], error["msg"]) for error in info.value.errors()]


def one_attribute(spec: dict[str, Any]) -> MappingConfig:
    """A mapping whose users table has one attribute `x` read from column `v`."""
    table = {"identifiers": {"user_id": "id"}, "attributes": {"x": {"column": "v", **spec}}}
    return MappingConfig.model_validate({"tables": {"shop:public.users": table}})


def x_of(value: Any, spec: dict[str, Any]) -> Any:
    return mapped(event(Op.CREATE, after={"id": 1, "v": value}), one_attribute(spec)).attributes["x"]


# --- ops --------------------------------------------------------------------------------------


@pytest.mark.parametrize("op", [Op.CREATE, Op.READ])
def test_create_and_snapshot_read_claim_live_identifiers_and_set_attributes(op: Op) -> None:
    mutation = mapped(event(op, after=USER))
    assert mutation.table == "shop:public.users"
    assert mutation.identifiers == (
        IdentifierClaim("user_id", "1", True),
        IdentifierClaim("email", "sally.thomas@acme.com", True),
    )
    assert mutation.attributes == {"first_name": "Sally", "city": "London", "birth_date": "1988-03-14"}
    assert mutation.deleted == frozenset()
    assert mutation.entity is None


def test_mutation_carries_the_record_ref() -> None:
    ev = event(Op.CREATE, after=USER)
    assert mapped(ev).ref == ev.ref


def test_version_is_commit_time_position_and_source_priority() -> None:
    assert mapped(event(Op.CREATE, after=USER)).version == Version(
        1_748_855_647_318_422, (27114392, 27114680), 2, "shop"
    )


def test_snapshot_rows_sharing_a_position_get_distinct_versions_by_row_key() -> None:
    first = mapped(event(Op.READ, after=USER)).version
    other = mapped(event(Op.READ, after={**USER, "id": 8})).version
    assert first != other and first.position[:2] == other.position[:2] == (27114392, 27114680)
    assert mapped(event(Op.READ, after=USER)).version == first  # a redelivery is the same fact


def test_version_priority_is_zero_for_a_source_without_settings() -> None:
    mapping = MappingConfig.model_validate(with_(("sources",), {}))
    assert mapped(event(Op.CREATE, after=USER), mapping).version.priority == 0


def test_update_sets_attributes_from_the_after_image() -> None:
    mutation = mapped(event(Op.UPDATE, before=USER, after={**USER, "city": "Leeds"}))
    assert mutation.attributes["city"] == "Leeds"
    assert mutation.identifiers == (
        IdentifierClaim("user_id", "1", True),
        IdentifierClaim("email", "sally.thomas@acme.com", True),
    )


def test_update_that_changes_the_email_claims_the_old_email_not_live() -> None:
    mutation = mapped(event(Op.UPDATE, before=USER, after={**USER, "email": "sally@new.example"}))
    assert IdentifierClaim("email", "sally@new.example", True) in mutation.identifiers
    assert IdentifierClaim("email", "sally.thomas@acme.com", False) in mutation.identifiers


def test_update_that_nulls_an_identifier_claims_the_old_value_not_live() -> None:
    mutation = mapped(event(Op.UPDATE, before=USER, after={**USER, "email": None}))
    assert mutation.identifiers == (
        IdentifierClaim("user_id", "1", True),
        IdentifierClaim("email", "sally.thomas@acme.com", False),
    )


def test_update_that_only_changes_email_case_moves_no_identifier() -> None:
    mutation = mapped(event(Op.UPDATE, before=USER, after={**USER, "email": "SALLY.THOMAS@acme.com"}))
    assert all(claim.live for claim in mutation.identifiers)


def test_update_without_a_before_image_moves_nothing() -> None:
    mutation = mapped(event(Op.UPDATE, after={**USER, "email": "sally@new.example"}))
    assert all(claim.live for claim in mutation.identifiers)


def test_update_with_an_unavailable_identifier_does_not_move_it() -> None:
    after = {k: v for k, v in USER.items() if k != "email"}
    mutation = mapped(event(Op.UPDATE, before=USER, after=after, unavailable=frozenset({"email"})))
    assert mutation.identifiers == (IdentifierClaim("user_id", "1", True),)


def test_delete_claims_the_before_identifiers_not_live_and_tombstones_every_attribute() -> None:
    mutation = mapped(event(Op.DELETE, before=USER))
    assert mutation.identifiers == (
        IdentifierClaim("user_id", "1", False),
        IdentifierClaim("email", "sally.thomas@acme.com", False),
    )
    assert mutation.attributes == {}
    assert mutation.deleted == {"first_name", "city", "birth_date"}


def test_delete_without_a_before_image_is_a_mapping_error() -> None:
    with pytest.raises(MappingError, match="shop:public.users: delete has no before image"):
        map_event(event(Op.DELETE, key={"id": 1}), MAPPING)


def test_truncate_is_a_mapping_error_naming_the_table() -> None:
    with pytest.raises(MappingError, match="truncate of shop:public.users is not applied"):
        map_event(event(Op.TRUNCATE), MAPPING)


def test_truncate_of_an_ignored_table_maps_to_none() -> None:
    assert map_event(event(Op.TRUNCATE, "products"), MAPPING) is None


# --- tables -----------------------------------------------------------------------------------


def test_table_key_is_source_and_qualified_table() -> None:
    assert table_key(event(Op.CREATE, after=USER)) == "shop:public.users"
    assert table_key(contact_event(Op.CREATE, after={"id": 1})) == "crm:crm.contacts"


def test_mariadb_table_is_found_by_database_and_table() -> None:
    contact = {"id": 5, "email": "a@b.c", "phone": None, "loyalty_tier": "gold",
               "loyalty_points": 250, "preferences": None}
    assert mapped(contact_event(Op.CREATE, after=contact)).table == "crm:crm.contacts"


@pytest.mark.parametrize("table", ["products", "cdc_heartbeat"])
def test_ignored_table_maps_to_none(table: str) -> None:
    assert map_event(event(Op.CREATE, table, after={"id": 1}), MAPPING) is None


def test_unmapped_table_is_a_mapping_error_by_default() -> None:
    with pytest.raises(MappingError, match="unmapped table shop:public.order_items"):
        map_event(event(Op.CREATE, "order_items", after={"id": 1}), MAPPING)


def test_unmapped_table_maps_to_none_when_unmapped_is_ignore() -> None:
    mapping = MappingConfig.model_validate(with_(("unmapped",), "ignore"))
    assert map_event(event(Op.CREATE, "order_items", after={"id": 1}), mapping) is None


def test_same_table_name_in_another_source_is_not_mapped() -> None:
    with pytest.raises(MappingError, match="unmapped table crm:public.users"):
        map_event(event(Op.CREATE, source="crm", after=USER), MAPPING)


# --- identifiers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("normalizer", "text", "expected"),
    [
        ("email", " Sally.Thomas@ACME.com ", "sally.thomas@acme.com"),
        ("lower", " MiXed ", " mixed "),
        ("strip", "  Padded \t", "Padded"),
        ("phone", "+44 20 7946 0001", "+442079460001"),
        ("phone", " +1 (555) 0100", "+15550100"),
        ("phone", "030-1234567", "0301234567"),
        ("phone", "+", ""),
        ("none", " As Is ", " As Is "),
    ],
)
def test_normalizer_rewrites_text(normalizer: Normalizer, text: str, expected: str) -> None:
    assert normalize(text, normalizer) == expected


@pytest.mark.parametrize("normalizer", ["email", "lower", "strip", "phone", "none"])
@given(text=st.text())
def test_normalizers_are_idempotent(normalizer: Normalizer, text: str) -> None:
    once = normalize(text, normalizer)
    assert normalize(once, normalizer) == once


def test_integer_identifier_becomes_text() -> None:
    assert mapped(event(Op.CREATE, after=USER)).identifiers[0] == IdentifierClaim("user_id", "1", True)


def test_identifier_empty_after_normalisation_counts_as_absent() -> None:
    mutation = mapped(event(Op.CREATE, after={**USER, "email": "   "}))
    assert [claim.type for claim in mutation.identifiers] == ["user_id"]


@pytest.mark.parametrize(("op", "image"), [(Op.CREATE, "after"), (Op.DELETE, "before")])
@pytest.mark.parametrize("email", [None, "", "  "])
def test_row_without_any_identifier_is_a_mapping_error_naming_the_columns(
    op: Op, image: str, email: str | None
) -> None:
    row = {**USER, "id": None, "email": email}
    with pytest.raises(MappingError, match="shop:public.users: no identifier .*columns email, id") as info:
        map_event(event(op, key={"id": 1}, **{image: row}), MAPPING)  # type: ignore[arg-type]
    assert "Sally" not in str(info.value)


@pytest.mark.parametrize("value", [True, 1.5, {"a": 1}, ["x"]])
def test_identifier_that_is_not_text_or_integer_is_a_mapping_error(value: Any) -> None:
    with pytest.raises(MappingError, match="shop:public.users: column 'email' is not text or an integer"):
        map_event(event(Op.CREATE, after={**USER, "email": value}), MAPPING)


# --- attributes -------------------------------------------------------------------------------


def test_unavailable_column_yields_no_attribute() -> None:
    after = {k: v for k, v in USER.items() if k != "city"}
    mutation = mapped(event(Op.UPDATE, before=USER, after=after, unavailable=frozenset({"city"})))
    assert "city" not in mutation.attributes
    assert "city" not in mutation.deleted


def test_null_column_yields_a_none_attribute() -> None:
    assert mapped(event(Op.CREATE, after={**USER, "city": None})).attributes["city"] is None


def test_mapped_column_missing_from_the_after_image_is_a_mapping_error() -> None:
    after = {k: v for k, v in USER.items() if k != "city"}
    with pytest.raises(MappingError, match="shop:public.users: column 'city' is not in the after image"):
        map_event(event(Op.CREATE, after=after), MAPPING)


def test_templated_attribute_name_is_filled_from_the_row() -> None:
    mutation = mapped(event(Op.CREATE, "consents", after=CONSENT))
    assert mutation.attributes == {"consent_email_marketing": True}


def test_templated_attribute_with_a_null_name_column_is_a_mapping_error() -> None:
    with pytest.raises(MappingError, match="needs column 'channel', which is null"):
        map_event(event(Op.CREATE, "consents", after={**CONSENT, "channel": None}), MAPPING)


def test_update_that_changes_a_templated_name_column_tombstones_the_old_name() -> None:
    mutation = mapped(event(Op.UPDATE, "consents", before=CONSENT, after={**CONSENT, "channel": "sms"}))
    assert mutation.attributes == {"consent_sms_marketing": True}
    assert mutation.deleted == {"consent_email_marketing"}


def test_delete_tombstones_templated_names_resolved_from_the_before_image() -> None:
    mutation = mapped(event(Op.DELETE, "consents", before=CONSENT))
    assert mutation.deleted == {"consent_email_marketing"}


def test_delete_that_cannot_resolve_a_templated_name_is_a_mapping_error() -> None:
    with pytest.raises(MappingError, match="'consent_\\{channel\\}_\\{purpose\\}' needs a column"):
        map_event(event(Op.DELETE, "consents", before={**CONSENT, "purpose": None}), MAPPING)


def test_crm_contact_maps_normalised_phone_integer_and_parsed_json() -> None:
    contact = {"id": 5, "email": " Nora@Example.SE ", "phone": "+46 8 123 456 78", "loyalty_tier": "silver",
               "loyalty_points": 0, "preferences": '{"language": "sv"}'}
    mutation = mapped(contact_event(Op.CREATE, after=contact))
    assert mutation.identifiers == (
        IdentifierClaim("email", "nora@example.se", True),
        IdentifierClaim("crm_contact_id", "5", True),
    )
    assert mutation.attributes == {"phone": "+46812345678", "loyalty_tier": "silver", "loyalty_points": 0,
                                   "preferences": {"language": "sv"}}
    assert mutation.version.priority == 1


# --- types ------------------------------------------------------------------------------------

CEST = timezone(timedelta(hours=2))


@pytest.mark.parametrize(
    ("spec", "value", "expected"),
    [
        ({}, "Sally", "Sally"),
        ({}, 42, "42"),
        ({}, Decimal("1.50"), "1.50"),
        ({"normalize": "lower"}, "LONDON", "london"),
        ({"type": "integer"}, 1840, 1840),
        ({"type": "integer"}, "-17", -17),
        ({"type": "integer"}, Decimal("3"), 3),
        ({"type": "integer"}, 3.0, 3),
        ({"type": "number"}, 1.5, 1.5),
        ({"type": "number"}, 7, 7),
        ({"type": "number"}, "2.5", 2.5),
        ({"type": "number"}, Decimal("0.25"), 0.25),
        ({"type": "decimal"}, Decimal("62.30"), "62.30"),
        ({"type": "decimal"}, "62.30", "62.30"),
        ({"type": "decimal"}, Decimal("1E+2"), "100"),
        ({"type": "decimal"}, Decimal("12345678901234567890.123456789012345678"),
         "12345678901234567890.123456789012345678"),
        ({"type": "decimal"}, 5, "5"),
        ({"type": "decimal"}, 0.1, "0.1"),
        ({"type": "boolean"}, True, True),
        ({"type": "boolean"}, False, False),
        ({"type": "boolean"}, 1, True),
        ({"type": "boolean"}, 0, False),
        ({"type": "date"}, 11534, "2001-07-31"),
        ({"type": "date"}, -1, "1969-12-31"),
        ({"type": "date"}, date(1988, 3, 14), "1988-03-14"),
        ({"type": "date"}, "1988-03-14", "1988-03-14"),
        ({"type": "datetime"}, 1_748_855_647_318_422, "2025-06-02T09:14:07.318422Z"),
        ({"type": "datetime", "epoch_unit": "ms"}, 1_748_855_647_318, "2025-06-02T09:14:07.318000Z"),
        ({"type": "datetime"}, 0, "1970-01-01T00:00:00.000000Z"),
        ({"type": "datetime"}, datetime(2025, 6, 2, 11, 14, 7, tzinfo=CEST), "2025-06-02T09:14:07.000000Z"),
        ({"type": "datetime"}, datetime(2025, 6, 2, 9, 14, 7), "2025-06-02T09:14:07.000000Z"),
        ({"type": "datetime"}, "2025-06-02T09:14:07.318422Z", "2025-06-02T09:14:07.318422Z"),
        ({"type": "datetime"}, "2025-06-02T11:14:07.5+02:00", "2025-06-02T09:14:07.500000Z"),
        ({"type": "json"}, '{"language": "sv", "sizes": ["M"]}', {"language": "sv", "sizes": ["M"]}),
        ({"type": "json"}, '"plain"', "plain"),
        ({"type": "json"}, "null", None),
        ({"type": "json"}, {"already": [1, 2.5, True]}, {"already": [1, 2.5, True]}),
        ({"type": "json"}, [Decimal("1.10"), date(2025, 1, 2)], ["1.10", "2025-01-02"]),
    ],
)
def test_attribute_type_converts_to_a_json_ready_value(
    spec: dict[str, Any], value: Any, expected: Any
) -> None:
    result = x_of(value, spec)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    "kind", ["string", "integer", "number", "decimal", "boolean", "date", "datetime", "json"]
)
def test_null_stays_none_for_every_type(kind: str) -> None:
    assert x_of(None, {"type": kind}) is None


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("string", True),
        ("string", ["secret-value"]),
        ("string", 1.5),
        ("integer", "4.5"),
        ("integer", "secret-value"),
        ("integer", 4.5),
        ("integer", True),
        ("number", "nan"),
        ("number", "secret-value"),
        ("number", float("inf")),
        ("number", False),
        ("decimal", "secret-value"),
        ("decimal", "NaN"),
        ("decimal", float("nan")),
        ("decimal", Decimal("1E+999999")),
        ("boolean", 2),
        ("boolean", "true"),
        ("date", "2025-13-01"),
        ("date", datetime(2025, 6, 2)),
        ("date", 10**12),
        ("datetime", "secret-value"),
        ("datetime", date(2025, 6, 2)),
        ("datetime", 10**30),
        ("json", "{secret-value"),
        ("json", "NaN"),
        ("json", "1e999"),
        ("json", {1: "non-text key"}),
        ("json", object()),
    ],
)
def test_value_its_type_cannot_hold_is_a_mapping_error_without_the_value(kind: str, value: Any) -> None:
    message = f"shop:public.users: column 'v' is not a valid {kind} value"
    with pytest.raises(MappingError, match=message) as info:
        x_of(value, {"type": kind})
    assert "secret" not in str(info.value)
    assert info.value.__cause__ is None


# --- entities ---------------------------------------------------------------------------------


def test_cart_row_becomes_a_cart_entity_with_its_selected_columns() -> None:
    mutation = mapped(event(Op.CREATE, "carts", after=CART))
    assert mutation.entity == EntityChange(
        "cart", "7", {"status": "open", "created_at": "2025-06-02T09:00:00Z", "updated_at": "x"}
    )
    assert mutation.identifiers == (
        IdentifierClaim("user_id", "1", True),
        IdentifierClaim("cart_id", "7", True),
    )


def test_cart_item_entity_names_its_parent_cart() -> None:
    entity = mapped(event(Op.CREATE, "cart_items", after=CART_ITEM)).entity
    assert entity is not None
    assert entity.parent == ("cart", "7")
    assert entity.data == {"product_id": 3, "quantity": 2, "unit_price": "24.90",
                           "added_at": "2025-06-02T09:00:01Z"}


def test_entity_without_columns_keeps_every_column_as_json_ready_values() -> None:
    order = {"id": 9, "user_id": 1, "cart_id": None, "total": Decimal("62.30"), "tags": ("a",),
             "placed_at": datetime(2025, 6, 2, 9, 0, tzinfo=UTC), "due": date(2025, 7, 1),
             "at": time(9, 30), "extra": {"n": 1.5}}
    entity = mapped(event(Op.CREATE, "orders", after=order)).entity
    assert entity == EntityChange("order", "9", {
        "id": 9, "user_id": 1, "cart_id": None, "total": "62.30", "tags": ["a"],
        "placed_at": "2025-06-02T09:00:00.000000Z", "due": "2025-07-01", "at": "09:30:00",
        "extra": {"n": 1.5},
    }, None)


def test_entity_with_a_null_parent_column_has_no_parent() -> None:
    entity = mapped(event(Op.CREATE, "orders", after={"id": 9, "user_id": 1, "cart_id": None})).entity
    assert entity is not None and entity.parent is None


def test_entity_leaves_out_unavailable_columns() -> None:
    after = {k: v for k, v in CART.items() if k != "status"}
    ev = event(Op.UPDATE, "carts", before=CART, after=after, unavailable=frozenset({"status"}))
    entity = mapped(ev).entity
    assert entity is not None and entity.data is not None
    assert "status" not in entity.data


def test_entity_column_without_a_json_form_is_a_mapping_error() -> None:
    with pytest.raises(MappingError, match="shop:public.orders: column 'blob' has no JSON form"):
        map_event(event(Op.CREATE, "orders", after={"id": 9, "user_id": 1, "blob": b"raw"}), MAPPING)


def test_delete_of_an_entity_row_changes_the_entity_to_no_data() -> None:
    mutation = mapped(event(Op.DELETE, "cart_items", before=CART_ITEM))
    assert mutation.entity == EntityChange("cart_item", "70", None, ("cart", "7"))
    assert mutation.identifiers == (IdentifierClaim("cart_id", "7", False),)


def test_delete_takes_the_entity_id_from_the_record_key_when_the_before_image_lacks_it() -> None:
    before = {k: v for k, v in CART_ITEM.items() if k != "id"}
    entity = mapped(event(Op.DELETE, "cart_items", before=before, key={"id": 70})).entity
    assert entity is not None and entity.entity_id == "70"


def test_entity_row_without_an_id_is_a_mapping_error() -> None:
    with pytest.raises(MappingError, match="shop:public.carts: entity id column 'id' is null or missing"):
        map_event(event(Op.CREATE, "carts", after={**CART, "id": None}, key={}), MAPPING)


# --- configuration ----------------------------------------------------------------------------


def test_shorthand_column_name_becomes_a_spec() -> None:
    users = MAPPING.tables["shop:public.users"]
    assert users.identifiers["user_id"] == IdentifierSpec(column="id", normalize="none")
    assert users.attributes["first_name"] == AttributeSpec(column="first_name", type="string")


def test_empty_mapping_section_is_valid_and_dead_letters_unmapped_tables() -> None:
    mapping = MappingConfig()
    assert mapping.unmapped == "dead_letter"
    with pytest.raises(MappingError):
        map_event(event(Op.CREATE, after=USER), mapping)


def test_mapping_config_is_frozen() -> None:
    with pytest.raises(ValidationError):
        MAPPING.unmapped = "ignore"


USERS = ("tables", "shop:public.users")


@pytest.mark.parametrize(
    ("path", "value", "loc", "message"),
    [
        ((*USERS, "attributes", "x"), {"column": "x", "type": "text"}, (*USERS, "attributes", "x", "type"),
         "Input should be"),
        ((*USERS, "attributes", "x"), 5, (*USERS, "attributes", "x"), "Input should be"),
        ((*USERS, "attributes", "x"), {"column": "x", "colour": 1}, (*USERS, "attributes", "x", "colour"),
         "Extra inputs"),
        ((*USERS, "attributes", "x"), {"column": "x", "type": "integer", "normalize": "email"},
         (*USERS, "attributes", "x"), "normalize applies to string attributes only"),
        ((*USERS, "attributes", "x"), {"column": "x", "type": "date", "epoch_unit": "ms"},
         (*USERS, "attributes", "x"), "epoch_unit applies to datetime attributes only"),
        ((*USERS, "attributes", "x"), {"column": "x", "type": "datetime", "epoch_unit": "s"},
         (*USERS, "attributes", "x", "epoch_unit"), "Input should be"),
        ((*USERS, "attributes", "c_{1x}"), "v", (*USERS, "attributes", "c_{1x}", "[key]"),
         "placeholder {1x} is not a column name"),
        ((*USERS, "attributes", "c_{a b}"), "v", (*USERS, "attributes", "c_{a b}", "[key]"),
         "placeholder {a b} is not a column name"),
        ((*USERS, "attributes", "c_{channel"), "v", (*USERS, "attributes", "c_{channel", "[key]"),
         "unbalanced"),
        ((*USERS, "attributes", ""), "v", (*USERS, "attributes", "", "[key]"), "attribute name is empty"),
        ((*USERS, "identifiers", "email"), {"column": "email", "normalize": "upper"},
         (*USERS, "identifiers", "email", "normalize"), "Input should be"),
        ((*USERS, "identifiers", "e-mail"), "email", (*USERS, "identifiers", "e-mail", "[key]"),
         "String should match pattern"),
        ((*USERS, "identifiers"), {}, (*USERS, "identifiers"), "at least 1 item"),
        ((*USERS, "colour"), "blue", (*USERS, "colour"), "Extra inputs"),
        (("tables", "public.users"), {"identifiers": {"user_id": "id"}}, ("tables", "public.users", "[key]"),
         "<source>:<schema-or-database>.<table>"),
        (("tables", "shop:users"), {"identifiers": {"user_id": "id"}}, ("tables", "shop:users", "[key]"),
         "<source>:<schema-or-database>.<table>"),
        (("tables", "shop:public.carts", "entity", "columns"), ["status", "status"],
         ("tables", "shop:public.carts", "entity", "columns"), "a column is listed twice"),
        (("tables", "shop:public.carts", "entity", "kind"), "Cart Kind",
         ("tables", "shop:public.carts", "entity", "kind"), "String should match pattern"),
        (("ignore",), ["products"], ("ignore", 0), "<source>:<schema-or-database>.<table>"),
        (("sources", "shop", "priority"), -1, ("sources", "shop", "priority"), "greater than or equal to 0"),
        (("sources", "shop", "priority"), 65536, ("sources", "shop", "priority"), "less than or equal"),
        (("unmapped",), "drop", ("unmapped",), "Input should be 'dead_letter' or 'ignore'"),
        (("aggregates", "lv"), {"entity": "order", "function": "sum"}, ("aggregates", "lv"),
         "sum needs a field"),
        (("aggregates", "n"), {"entity": "order", "function": "count", "field": "id"}, ("aggregates", "n"),
         "count takes no field"),
        (("aggregates", "n"), {"entity": "order", "function": "avg"}, ("aggregates", "n", "function"),
         "Input should be"),
        (("aggregates", "n"), {"entity": "order", "function": "count", "where": {"status": []}},
         ("aggregates", "n", "where", "status"), "at least 1 item"),
        (("aggregates", "n"), {"entity": "invoice", "function": "count"}, ("aggregates",),
         "n: entity 'invoice' is no table's entity kind"),
        (("aggregates", "city"), {"entity": "order", "function": "count"}, ("aggregates",),
         "city: the name is also an attribute ('city')"),
        (("aggregates", "consent_email_marketing"), {"entity": "order", "function": "count"}, ("aggregates",),
         "consent_email_marketing: the name is also an attribute ('consent_{channel}_{purpose}')"),
        (("tables", "shop:public.products"), {"identifiers": {"user_id": "id"}}, ("tables",),
         "shop:public.products: listed in both tables and ignore"),
        (("tables", "shop:public.cart_items", "entity", "parent", "kind"), "basket", ("tables",),
         "shop:public.cart_items: entity.parent.kind 'basket' is no table's entity kind"),
    ],
)
def test_invalid_mapping_is_rejected_at_the_offending_key(
    path: tuple[str, ...], value: Any, loc: tuple[str | int, ...], message: str
) -> None:
    [(error_loc, error_message)] = errors(with_(path, value))
    assert error_loc == loc
    assert message in error_message


def test_table_without_identifiers_is_rejected() -> None:
    raw = {"tables": {"shop:public.users": {"attributes": {"city": "city"}}}}
    assert errors(raw) == [((*USERS, "identifiers"), "Field required")]


def test_aggregate_reading_a_column_no_entity_keeps_is_rejected() -> None:
    raw = with_(("tables", "shop:public.orders", "entity", "columns"), ["status", "placed_at"])
    [(loc, message)] = errors(raw)
    assert loc == ("aggregates",)
    assert message.endswith("lifetime_value: entity 'order' keeps no column total")


# --- properties -------------------------------------------------------------------------------

ALL_TYPES = MappingConfig.model_validate({"tables": {"shop:public.users": {
    "identifiers": {"user_id": "id", "email": {"column": "email", "normalize": "email"}},
    "attributes": {
        "s": {"column": "s", "normalize": "phone"}, "i": {"column": "i", "type": "integer"},
        "n": {"column": "n", "type": "number"}, "d": {"column": "d", "type": "decimal"},
        "b": {"column": "b", "type": "boolean"}, "day": {"column": "day", "type": "date"},
        "t": {"column": "t", "type": "datetime", "epoch_unit": "ms"}, "j": {"column": "j", "type": "json"},
        "k_{s}": {"column": "i", "type": "integer"},
    },
    "entity": {"kind": "user", "id": "id"},
}}})
PII = st.text(max_size=8).map(lambda s: "PII-" + s)
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.decimals(), PII, st.text(max_size=12),
    st.dates(), st.datetimes(timezones=st.none() | st.just(UTC)), st.times(),
)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner),
                      max_leaves=6)
# Each column: a value of its usual shape, or anything at all, so both outcomes are explored.
USUAL = {
    "id": st.integers(min_value=0) | PII,
    "email": PII,
    "s": PII | st.none(),
    "i": st.integers() | st.from_regex(r"[+-]?[0-9]{1,30}", fullmatch=True),
    "n": st.floats() | st.integers(),
    "d": st.decimals() | PII,
    "b": st.booleans() | st.integers(0, 1),
    "day": st.integers(-10**6, 10**6) | st.dates() | PII,
    "t": st.integers(-10**14, 10**14) | st.datetimes() | PII,
    "j": st.just('{"a": [1, 2.5, null]}') | VALUES,
}
ROWS = st.fixed_dictionaries({column: usual | VALUES for column, usual in USUAL.items()})


@given(op=st.sampled_from([Op.CREATE, Op.READ, Op.UPDATE, Op.DELETE]), before=ROWS, after=ROWS)
def test_mapping_arbitrary_rows_raises_only_mapping_errors_without_values(
    op: Op, before: dict[str, Any], after: dict[str, Any]
) -> None:
    ev = event(op, before=before, after=None if op is Op.DELETE else after)
    try:
        mutation = map_event(ev, ALL_TYPES)
    except MappingError as error:
        assert "PII-" not in str(error)
        return
    assert mutation is not None
    assert mutation.identifiers
    assert all(claim.value for claim in mutation.identifiers)
    assert mutation.entity is not None
    json.dumps([dict(mutation.attributes), mutation.entity.data], allow_nan=False)  # JSON-ready


def test_the_documented_example_is_a_valid_mapping() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "mapping.md").read_text()
    block = doc.split("```yaml\n", 1)[1].split("```", 1)[0]
    mapping = MappingConfig.model_validate(yaml.safe_load(block)["mapping"])
    assert "shop:public.users" in mapping.tables
