"""Map stage: a ChangeEvent becomes a RowChange (what it says about one source row) as the
`mapping:` section declares."""

from __future__ import annotations

import contextlib
import copy
import json
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from hypothesis import given, settings
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
from cdc_sync.core.mutations import EntityChange, Reference, RowChange, Version
from cdc_sync.core.rows import same_json

ROOT = Path(__file__).parents[2]

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
            "owner": {"identifier": "user_id", "column": "user_id"},
            "attributes": {"consent_{channel}_{purpose}": {"column": "granted", "type": "boolean"}},
        },
        "shop:public.carts": {
            "owner": {"identifier": "user_id", "column": "user_id"},
            "entity": {"kind": "cart", "id": "id", "columns": ["status", "created_at", "updated_at"]},
        },
        "shop:public.cart_items": {
            "owner": {"entity": "cart", "column": "cart_id"},
            "entity": {"kind": "cart_item", "id": "id",
                       "columns": ["product_id", "quantity", "unit_price", "added_at"]},
        },
        "shop:public.orders": {
            "owner": {"identifier": "user_id", "column": "user_id"},
            "entity": {"kind": "order", "id": "id"},
        },
        "shop:public.newsletter": {
            "owner": {"identifier": "email", "column": "address", "normalize": "email"},
            "attributes": {"newsletter": {"column": "subscribed", "type": "boolean"}},
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
USER_IDS = (("user_id", "1"), ("email", "sally.thomas@acme.com"))
USER_ATTRS = {"first_name": "Sally", "city": "London", "birth_date": "1988-03-14"}
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
COMMIT_US = 1_748_855_647_318_422
POSITION = (27114392, 27114680)


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
        commit_us=COMMIT_US,
        position=POSITION,
        snapshot=op is Op.READ,
        txid="771",
    )


def contact_event(op: Op, **images: dict[str, Any] | None) -> ChangeEvent:
    return event(op, "contacts", source="crm", schema=None, database="crm", **images)  # type: ignore[arg-type]


def mapped(ev: ChangeEvent, mapping: MappingConfig = MAPPING) -> RowChange:
    change = map_event(ev, mapping)
    assert change is not None
    return change


def with_(path: tuple[str, ...], value: Any, raw: dict[str, Any] = RAW) -> dict[str, Any]:
    """A copy of `raw` with the value at `path` replaced (a missing last key is added)."""
    result = copy.deepcopy(raw)
    node = result
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return result


def without(path: tuple[str, ...], raw: dict[str, Any] = RAW) -> dict[str, Any]:
    """A copy of `raw` without the key at `path`."""
    result = copy.deepcopy(raw)
    node = result
    for part in path[:-1]:
        node = node[part]
    del node[path[-1]]
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


def but(row: dict[str, Any], *columns: str) -> dict[str, Any]:
    """The row without `columns` (as an image that does not carry them)."""
    return {k: v for k, v in row.items() if k not in columns}


# --- ops --------------------------------------------------------------------------------------


@pytest.mark.parametrize("op", [Op.CREATE, Op.READ])
def test_create_and_snapshot_read_claim_identifiers_and_carry_attributes(op: Op) -> None:
    change = mapped(event(op, after=USER))
    assert change.table == "shop:public.users"
    assert change.row_key == '{"id":1}'
    assert change.identifiers == USER_IDS
    assert change.attributes == USER_ATTRS
    assert change.deleted is False
    assert change.owner is None and change.entity is None
    assert change.before is None and change.partial is False


def test_change_carries_the_record_ref() -> None:
    ev = event(Op.CREATE, after=USER)
    assert mapped(ev).ref == ev.ref


def test_row_is_table_and_row_key() -> None:
    assert mapped(event(Op.CREATE, after=USER)).row == ("shop:public.users", '{"id":1}')


def test_row_key_is_canonical_json_of_the_record_key() -> None:
    ev = event(Op.CREATE, after=USER, key={"tenant": "t1", "id": 1})
    assert mapped(ev).row_key == '{"id":1,"tenant":"t1"}'


def test_row_key_wider_than_64_bits_is_a_mapping_error() -> None:
    with pytest.raises(MappingError, match="shop:public.users: the row key has no JSON form"):
        map_event(event(Op.CREATE, after=USER, key={"id": 2**64}), MAPPING)


def test_record_without_a_row_key_is_a_mapping_error() -> None:
    ev = event(Op.CREATE, after=USER)._replace(key={})
    with pytest.raises(MappingError, match="shop:public.users: the record has no row key"):
        map_event(ev, MAPPING)


def test_version_is_commit_time_source_priority_source_and_position() -> None:
    assert mapped(event(Op.CREATE, after=USER)).version == Version(COMMIT_US, 2, "shop", POSITION)


def test_snapshot_version_tiebreak_is_the_table_and_row_key() -> None:
    assert mapped(event(Op.READ, after=USER)).version == Version(
        COMMIT_US, 2, "shop", POSITION, 'public.users|{"id":1}')


def test_snapshot_rows_sharing_a_position_get_distinct_versions_by_row_key() -> None:
    first = mapped(event(Op.READ, after=USER)).version
    other = mapped(event(Op.READ, after={**USER, "id": 8})).version
    assert first != other and first.position == other.position == POSITION
    assert mapped(event(Op.READ, after=USER)).version == first  # a redelivery is the same fact


def test_snapshot_rows_of_two_tables_with_one_row_key_get_distinct_versions() -> None:
    user = mapped(event(Op.READ, after=USER)).version
    contact = mapped(contact_event(Op.READ, after={"id": 1, "email": "a@b.c", "phone": None,
                                                   "loyalty_tier": None, "loyalty_points": None,
                                                   "preferences": None})).version
    assert user.tiebreak != contact.tiebreak
    assert contact.tiebreak == 'crm.contacts|{"id":1}'


def test_version_priority_is_zero_for_a_source_without_settings() -> None:
    mapping = MappingConfig.model_validate(with_(("sources",), {}))
    assert mapped(event(Op.CREATE, after=USER), mapping).version.priority == 0


def test_update_carries_the_after_image_attributes_and_the_before_image_ones() -> None:
    change = mapped(event(Op.UPDATE, before=USER, after={**USER, "city": "Leeds"}))
    assert change.attributes == {**USER_ATTRS, "city": "Leeds"}
    assert change.before == USER_ATTRS
    assert change.identifiers == USER_IDS


def test_update_that_changes_the_email_claims_only_the_new_email() -> None:
    change = mapped(event(Op.UPDATE, before=USER, after={**USER, "email": "sally@new.example"}))
    assert change.identifiers == (("user_id", "1"), ("email", "sally@new.example"))


def test_update_that_nulls_an_identifier_claims_the_rest() -> None:
    change = mapped(event(Op.UPDATE, before=USER, after={**USER, "email": None}))
    assert change.identifiers == (("user_id", "1"),)


def test_update_with_an_unavailable_identifier_claims_the_rest() -> None:
    ev = event(Op.UPDATE, before=USER, after=but(USER, "email"), unavailable=frozenset({"email"}))
    assert mapped(ev).identifiers == (("user_id", "1"),)


def test_update_without_a_before_image_has_no_before_attributes() -> None:
    assert mapped(event(Op.UPDATE, after={**USER, "city": "Leeds"})).before is None


def test_update_with_a_key_only_before_image_has_empty_before_attributes() -> None:
    assert mapped(event(Op.UPDATE, before={"id": 1}, after={**USER, "city": "Leeds"})).before == {}


def test_before_attributes_leave_out_a_value_the_mapping_cannot_convert() -> None:
    ev = event(Op.UPDATE, before={**USER, "birth_date": "not a date"}, after=USER)
    assert mapped(ev).before == {"first_name": "Sally", "city": "London"}


def test_before_attributes_keep_a_null_column_as_none() -> None:
    ev = event(Op.UPDATE, before={**USER, "city": None}, after=USER)
    assert mapped(ev).before == {**USER_ATTRS, "city": None}


def test_before_attributes_of_columns_the_update_left_as_they_were_are_the_after_values() -> None:
    table = {"identifiers": {"user_id": "id"},
             "attributes": {"x": {"column": "v", "type": "json"}, "y": {"column": "w", "type": "integer"}}}
    mapping = MappingConfig.model_validate({"tables": {"shop:public.users": table}})
    ev = event(Op.UPDATE, before={"id": 1, "v": {"a": [1]}, "w": 1}, after={"id": 1, "v": {"a": [1]}, "w": 2})
    change = mapped(ev, mapping)
    assert change.attributes == {"x": {"a": [1]}, "y": 2} and change.before == {"x": {"a": [1]}, "y": 1}
    assert change.before["x"] is change.attributes["x"]  # not converted twice


@pytest.mark.parametrize(("was", "now"), [({"a": 1}, {"a": True}), ([1], [True]), ({"a": 1}, {"a": 1.0})],
                         ids=["int-to-bool", "in-a-list", "int-to-float"])
def test_before_attribute_of_a_json_column_changed_only_in_a_nested_type_is_the_before_value(
        was: Any, now: Any) -> None:
    change = mapped(event(Op.UPDATE, before={"id": 1, "v": was}, after={"id": 1, "v": now}),
                    one_attribute({"type": "json"}))
    assert change.before is not None
    assert same_json(change.before["x"], was) and same_json(change.attributes["x"], now)


def test_update_whose_before_image_holds_a_signalling_nan_maps_or_raises_a_mapping_error() -> None:
    ev = event(Op.UPDATE, before={**USER, "city": Decimal("sNaN")}, after={**USER, "city": Decimal("0")})
    with contextlib.suppress(MappingError):
        map_event(ev, MAPPING)


@pytest.mark.parametrize("op", [Op.CREATE, Op.READ])
def test_create_carries_no_before_attributes_even_with_a_before_image(op: Op) -> None:
    assert mapped(event(op, before=USER, after=USER)).before is None


@pytest.mark.parametrize("before", [USER, {"id": 1}, None], ids=["full", "key-only", "absent"])
def test_delete_carries_no_identifiers_and_no_attributes_only_the_row(
        before: dict[str, Any] | None) -> None:
    change = mapped(event(Op.DELETE, before=before, key={"id": 1}))
    assert change.deleted is True
    assert change.row == ("shop:public.users", '{"id":1}')
    assert change.identifiers == ()
    assert change.attributes == {} and change.before is None
    assert change.owner is None and change.entity is None


def test_delete_version_is_the_events_version() -> None:
    assert mapped(event(Op.DELETE, key={"id": 1})).version == Version(COMMIT_US, 2, "shop", POSITION)


def test_delete_of_a_row_whose_before_image_had_no_identifier_maps() -> None:
    change = mapped(event(Op.DELETE, before={**USER, "id": None, "email": None}, key={"id": 1}))
    assert change.deleted is True


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
    assert mapped(event(Op.CREATE, after=USER)).identifiers[0] == ("user_id", "1")


def test_integer_identifier_wider_than_64_bits_is_still_text() -> None:
    # Identifiers are text, so their width does not matter to the store's serialiser.
    change = mapped(event(Op.CREATE, after={**USER, "id": 2**70}, key={"id": 1}))
    assert change.identifiers[0] == ("user_id", str(2**70))


def test_identifier_empty_after_normalisation_counts_as_absent() -> None:
    change = mapped(event(Op.CREATE, after={**USER, "email": "   "}))
    assert change.identifiers == (("user_id", "1"),)


@pytest.mark.parametrize("op", [Op.CREATE, Op.READ, Op.UPDATE])
@pytest.mark.parametrize("email", [None, "", "  "])
def test_row_without_any_identifier_is_a_mapping_error_naming_the_columns(op: Op, email: str | None) -> None:
    row = {**USER, "id": None, "email": email}
    with pytest.raises(MappingError, match="shop:public.users: no identifier .*columns email, id") as info:
        map_event(event(op, key={"id": 1}, before=USER, after=row), MAPPING)
    assert "Sally" not in str(info.value)


@pytest.mark.parametrize("value", [True, 1.5, {"a": 1}, ["x"]])
def test_identifier_that_is_not_text_or_integer_is_a_mapping_error(value: Any) -> None:
    with pytest.raises(MappingError, match="shop:public.users: column 'email' is not text or an integer"):
        map_event(event(Op.CREATE, after={**USER, "email": value}), MAPPING)


# --- owners -----------------------------------------------------------------------------------


def test_owned_row_references_its_owner_by_identifier_and_claims_nothing() -> None:
    change = mapped(event(Op.CREATE, "consents", after=CONSENT))
    assert change.owner == Reference("identifier", "user_id", "1")
    assert change.identifiers == ()


def test_row_owned_through_an_entity_references_the_entity() -> None:
    assert mapped(event(Op.CREATE, "cart_items", after=CART_ITEM)).owner == Reference("entity", "cart", "7")


def test_owner_value_is_normalised() -> None:
    ev = event(Op.CREATE, "newsletter", after={"id": 4, "address": " Sally@ACME.com", "subscribed": True})
    assert mapped(ev).owner == Reference("identifier", "email", "sally@acme.com")


@pytest.mark.parametrize("user_id", [None, ""])
def test_row_with_a_null_or_empty_owner_column_is_owned_by_nobody(user_id: str | None) -> None:
    change = mapped(event(Op.CREATE, "orders", after={"id": 9, "user_id": user_id}))
    assert change.owner is None
    assert change.entity is not None


def test_owner_column_that_is_not_text_or_integer_is_a_mapping_error() -> None:
    message = "shop:public.consents: column 'user_id' is not text or an integer"
    with pytest.raises(MappingError, match=message):
        map_event(event(Op.CREATE, "consents", after={**CONSENT, "user_id": 1.5}), MAPPING)


def test_owner_column_missing_from_the_after_image_is_a_mapping_error() -> None:
    with pytest.raises(MappingError, match="column 'user_id' is not in the after image"):
        map_event(event(Op.CREATE, "consents", after=but(CONSENT, "user_id")), MAPPING)


def test_update_that_changes_the_owner_references_the_new_owner() -> None:
    ev = event(Op.UPDATE, "orders", before={"id": 9, "user_id": 1}, after={"id": 9, "user_id": 2})
    assert mapped(ev).owner == Reference("identifier", "user_id", "2")


def test_delete_of_an_owned_row_carries_no_owner() -> None:
    assert mapped(event(Op.DELETE, "consents", before=CONSENT)).owner is None


# --- attributes -------------------------------------------------------------------------------


def test_unavailable_column_yields_no_attribute_and_marks_the_change_partial() -> None:
    ev = event(Op.UPDATE, before=USER, after=but(USER, "city"), unavailable=frozenset({"city"}))
    change = mapped(ev)
    assert "city" not in change.attributes
    assert change.partial is True


def test_unavailable_column_that_no_attribute_reads_leaves_the_change_whole() -> None:
    ev = event(Op.UPDATE, before=USER, after=but(USER, "last_name"), unavailable=frozenset({"last_name"}))
    assert mapped(ev).partial is False


def test_unavailable_templated_name_column_marks_the_change_partial() -> None:
    ev = event(Op.UPDATE, "consents", before=CONSENT, after=but(CONSENT, "channel"),
               unavailable=frozenset({"channel"}))
    change = mapped(ev)
    assert change.attributes == {}
    assert change.partial is True


def test_null_column_yields_a_none_attribute() -> None:
    assert mapped(event(Op.CREATE, after={**USER, "city": None})).attributes["city"] is None


def test_mapped_column_missing_from_the_after_image_is_a_mapping_error() -> None:
    with pytest.raises(MappingError, match="shop:public.users: column 'city' is not in the after image"):
        map_event(event(Op.CREATE, after=but(USER, "city")), MAPPING)


def test_templated_attribute_name_is_filled_from_the_row() -> None:
    assert mapped(event(Op.CREATE, "consents", after=CONSENT)).attributes == {"consent_email_marketing": True}


def test_templated_attribute_with_a_null_name_column_is_a_mapping_error() -> None:
    with pytest.raises(MappingError, match="needs column 'channel', which is null"):
        map_event(event(Op.CREATE, "consents", after={**CONSENT, "channel": None}), MAPPING)


def test_update_that_changes_a_templated_name_column_carries_the_new_name_and_the_old_before() -> None:
    change = mapped(event(Op.UPDATE, "consents", before=CONSENT, after={**CONSENT, "channel": "sms"}))
    assert change.attributes == {"consent_sms_marketing": True}
    assert change.before == {"consent_email_marketing": True}


def test_before_image_with_a_null_name_column_carries_no_templated_attribute() -> None:
    change = mapped(event(Op.UPDATE, "consents", before={**CONSENT, "channel": None}, after=CONSENT))
    assert change.before == {}


def test_two_templated_names_resolving_to_one_is_a_mapping_error() -> None:
    mapping = MappingConfig.model_validate({"tables": {"shop:public.users": {
        "identifiers": {"user_id": "id"},
        "attributes": {"c_{a}": "x", "c_{b}": "y"}}}})
    with pytest.raises(MappingError, match="two attributes resolve to one name"):
        map_event(event(Op.CREATE, after={"id": 1, "a": "k", "b": "k", "x": 1, "y": 2}), mapping)


def test_crm_contact_maps_normalised_phone_integer_and_parsed_json() -> None:
    contact = {"id": 5, "email": " Nora@Example.SE ", "phone": "+46 8 123 456 78", "loyalty_tier": "silver",
               "loyalty_points": 0, "preferences": '{"language": "sv"}'}
    change = mapped(contact_event(Op.CREATE, after=contact))
    assert change.identifiers == (("email", "nora@example.se"), ("crm_contact_id", "5"))
    assert change.attributes == {"phone": "+46812345678", "loyalty_tier": "silver", "loyalty_points": 0,
                                 "preferences": {"language": "sv"}}
    assert change.version.priority == 1


# --- types ------------------------------------------------------------------------------------

CEST = timezone(timedelta(hours=2))


@pytest.mark.parametrize(
    ("spec", "value", "expected"),
    [
        ({}, "Sally", "Sally"),
        ({}, 42, "42"),
        ({}, Decimal("1.50"), "1.50"),
        ({}, Decimal("1E+3"), "1000"),
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


@pytest.mark.parametrize(("spec", "value"), [
    ({"type": "integer"}, 2**64 - 1),
    ({"type": "integer"}, -(2**63)),
    ({"type": "number"}, 2**64 - 1),
    ({"type": "json"}, {"n": -(2**63)}),
    ({"type": "json"}, "[18446744073709551615]"),
], ids=["integer-max", "integer-min", "number-max", "json-min", "json-text-max"])
def test_integer_at_the_64_bit_edge_is_kept(spec: dict[str, Any], value: Any) -> None:
    result = x_of(value, spec)
    assert result == (json.loads(value) if isinstance(value, str) else value)
    orjson.dumps(result)


@pytest.mark.parametrize(("kind", "value"), [
    ("integer", 2**64),
    ("integer", -(2**63) - 1),
    ("integer", "18446744073709551616"),
    ("integer", Decimal(2**64)),
    ("integer", 1e20),
    ("number", 2**64),
    ("number", -(2**63) - 1),
    ("json", 2**64),
    ("json", {"deep": [[{"n": 2**70}]]}),
    ("json", (1, -(2**63) - 1)),
    ("json", '{"n": 18446744073709551616}'),
    ("json", "[-9223372036854775809]"),
])
def test_integer_wider_than_64_bits_is_a_mapping_error(kind: str, value: Any) -> None:
    with pytest.raises(MappingError, match=WIDER_THAN_64_BITS):
        x_of(value, {"type": kind})


def test_integer_wider_than_64_bits_in_a_string_attribute_is_its_decimal_text() -> None:
    assert x_of(2**70, {}) == str(2**70)



# --- entities ---------------------------------------------------------------------------------


def test_cart_row_becomes_a_cart_entity_with_its_selected_columns() -> None:
    change = mapped(event(Op.CREATE, "carts", after=CART))
    assert change.entity == EntityChange(
        "cart", "7", {"status": "open", "created_at": "2025-06-02T09:00:00Z", "updated_at": "x"},
        has_children=True,
    )
    assert change.owner == Reference("identifier", "user_id", "1")
    assert change.identifiers == ()


@pytest.mark.parametrize(("table", "row", "has_children"), [
    ("carts", CART, True), ("cart_items", CART_ITEM, False), ("orders", {"id": 9, "user_id": 1}, False),
])
@pytest.mark.parametrize("op", [Op.CREATE, Op.DELETE])
def test_entity_has_children_when_another_table_is_owned_through_its_kind(
        table: str, row: dict[str, Any], has_children: bool, op: Op) -> None:
    ev = event(op, table, after=row if op is Op.CREATE else None, before=row if op is Op.DELETE else None)
    entity = mapped(ev).entity
    assert entity is not None and entity.has_children is has_children


@pytest.mark.parametrize(("table", "row", "tracked"), [
    ("users", USER, True), ("consents", CONSENT, True), ("carts", CART, False),
    ("cart_items", CART_ITEM, False), ("orders", {"id": 9, "user_id": 1}, False),
])
@pytest.mark.parametrize("op", [Op.CREATE, Op.UPDATE, Op.DELETE])
def test_only_rows_that_are_just_their_entity_are_untracked(
        table: str, row: dict[str, Any], tracked: bool, op: Op) -> None:
    ev = event(op, table, after=None if op is Op.DELETE else row, before=row)
    assert mapped(ev).tracked is tracked


def test_cart_item_entity_is_owned_by_its_cart() -> None:
    change = mapped(event(Op.CREATE, "cart_items", after=CART_ITEM))
    assert change.entity == EntityChange("cart_item", "70", {
        "product_id": 3, "quantity": 2, "unit_price": "24.90", "added_at": "2025-06-02T09:00:01Z"})
    assert change.owner == Reference("entity", "cart", "7")


def test_entity_without_columns_keeps_every_column_as_json_ready_values() -> None:
    order = {"id": 9, "user_id": 1, "cart_id": None, "total": Decimal("62.30"), "tags": ("a",),
             "placed_at": datetime(2025, 6, 2, 9, 0, tzinfo=UTC), "due": date(2025, 7, 1),
             "at": time(9, 30), "extra": {"n": 1.5}}
    entity = mapped(event(Op.CREATE, "orders", after=order)).entity
    assert entity == EntityChange("order", "9", {
        "id": 9, "user_id": 1, "cart_id": None, "total": "62.30", "tags": ["a"],
        "placed_at": "2025-06-02T09:00:00.000000Z", "due": "2025-07-01", "at": "09:30:00",
        "extra": {"n": 1.5},
    })


def test_entity_leaves_out_unavailable_columns() -> None:
    ev = event(Op.UPDATE, "carts", before=CART, after=but(CART, "status"), unavailable=frozenset({"status"}))
    entity = mapped(ev).entity
    assert entity is not None and entity.data is not None
    assert "status" not in entity.data


@pytest.mark.parametrize("value", [b"raw", 2**64, {"n": [-(2**63) - 1]}, {1: "non-text key"}])
def test_entity_column_without_a_json_form_is_a_mapping_error(value: Any) -> None:
    with pytest.raises(MappingError, match="shop:public.orders: column 'blob' has no JSON form"):
        map_event(event(Op.CREATE, "orders", after={"id": 9, "user_id": 1, "blob": value}), MAPPING)


@pytest.mark.parametrize("before", [CART_ITEM, {"id": 70}], ids=["full", "key-only"])
def test_delete_of_an_entity_row_changes_the_entity_to_no_data(before: dict[str, Any]) -> None:
    change = mapped(event(Op.DELETE, "cart_items", before=before))
    assert change.entity == EntityChange("cart_item", "70", None)
    assert change.owner is None and change.tracked is False


@pytest.mark.parametrize("before", [but(CART_ITEM, "id"), None], ids=["without-id", "absent"])
def test_delete_takes_the_entity_id_from_the_record_key_when_the_before_image_lacks_it(
        before: dict[str, Any] | None) -> None:
    entity = mapped(event(Op.DELETE, "cart_items", before=before, key={"id": 70})).entity
    assert entity == EntityChange("cart_item", "70", None)


def test_entity_row_without_an_id_is_a_mapping_error() -> None:
    with pytest.raises(MappingError, match="shop:public.carts: entity id column 'id' is null or missing"):
        map_event(event(Op.CREATE, "carts", after={**CART, "id": None}, key={"k": 1}), MAPPING)


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
CART_ITEMS = ("tables", "shop:public.cart_items")


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
        ((*USERS, "identifiers"), {}, USERS, "or only an entity (a catalogue"),
        ((*USERS, "owner"), {"identifier": "user_id", "column": "id"}, USERS,
         "or an owner (its rows belong to someone), not both"),
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
        ((*CART_ITEMS, "entity", "parent"), {"kind": "cart", "column": "cart_id"}, (*CART_ITEMS, "entity"),
         "entity.parent is now the table's owner: "
         "owner: {entity: <parent kind>, column: <parent id column>}"),
        ((*CART_ITEMS, "owner", "entity"), "basket", ("tables",),
         "shop:public.cart_items: owner.entity 'basket' is no table's entity kind"),
        ((*CART_ITEMS, "owner", "identifier"), "user_id", (*CART_ITEMS, "owner"),
         "an owner names either an identifier type or an entity kind"),
        ((*CART_ITEMS, "owner"), {"column": "cart_id"}, (*CART_ITEMS, "owner"),
         "an owner names either an identifier type or an entity kind"),
        ((*CART_ITEMS, "owner", "normalize"), "lower", (*CART_ITEMS, "owner"),
         "normalize applies to identifier owners only"),
        ((*CART_ITEMS, "owner", "colour"), "blue", (*CART_ITEMS, "owner", "colour"), "Extra inputs"),
        ((*CART_ITEMS, "owner", "identifier"), "user id", (*CART_ITEMS, "owner", "identifier"),
         "String should match pattern"),
        ((*CART_ITEMS, "attributes"), {"qty": "quantity"}, CART_ITEMS,
         "a row owned through an entity supplies no attributes (own it by an identifier instead)"),
    ],
)
def test_invalid_mapping_is_rejected_at_the_offending_key(
    path: tuple[str, ...], value: Any, loc: tuple[str | int, ...], message: str
) -> None:
    [(error_loc, error_message)] = errors(with_(path, value))
    assert error_loc == loc
    assert message in error_message


def test_table_without_identifiers_or_owner_is_rejected() -> None:
    raw = {"tables": {"shop:public.users": {"attributes": {"city": "city"}}}}
    [(loc, message)] = errors(raw)
    assert loc == USERS
    assert "a table has identifiers (its rows are people), an owner" in message


def test_a_catalogue_table_maps_to_an_entity_that_belongs_to_nobody() -> None:
    mapping = MappingConfig.model_validate(
        {"tables": {"shop:public.products": {"entity": {"kind": "product", "id": "id",
                                                        "columns": ["name"]}}}})
    table = mapping.tables["shop:public.products"]
    assert table.owner is None and not table.identifiers and table.entity is not None


def test_owned_table_without_attributes_or_entity_is_valid() -> None:
    raw = {"tables": {"shop:public.visits": {"owner": {"identifier": "user_id", "column": "user_id"}}}}
    assert MappingConfig.model_validate(raw).tables["shop:public.visits"].attributes == {}


def test_aggregate_reading_a_column_no_entity_keeps_is_rejected() -> None:
    raw = with_(("tables", "shop:public.orders", "entity", "columns"), ["status", "placed_at"])
    [(loc, message)] = errors(raw)
    assert loc == ("aggregates",)
    assert message.endswith("lifetime_value: entity 'order' keeps no column total")


# --- properties -------------------------------------------------------------------------------

ALL_TYPES = MappingConfig.model_validate({"tables": {
    "shop:public.users": {
        "identifiers": {"user_id": "id", "email": {"column": "email", "normalize": "email"}},
        "attributes": {
            "s": {"column": "s", "normalize": "phone"}, "i": {"column": "i", "type": "integer"},
            "n": {"column": "n", "type": "number"}, "d": {"column": "d", "type": "decimal"},
            "b": {"column": "b", "type": "boolean"}, "day": {"column": "day", "type": "date"},
            "t": {"column": "t", "type": "datetime", "epoch_unit": "ms"},
            "j": {"column": "j", "type": "json"},
            "k_{s}": {"column": "i", "type": "integer"},
        },
        "entity": {"kind": "user", "id": "id", "columns": ["j", "t", "d"]},
    },
    "shop:public.orders": {
        "owner": {"identifier": "user_id", "column": "id"},
        "attributes": {"j": {"column": "j", "type": "json"}, "s": "s"},
        "entity": {"kind": "order", "id": "id"},  # every column: every value meets an entity too
    },
}})
PII = st.text(max_size=8).map(lambda s: "PII-" + s)
WIDE = (st.integers(2**64, 2**80) | st.integers(-(2**80), -(2**63) - 1)
        | st.sampled_from([2**64, -(2**63) - 1, 10**30]))
EDGE = st.sampled_from([2**64 - 1, -(2**63), 2**63, 2**63 - 1])
INTS = st.integers() | EDGE | WIDE
# No signalling NaN (the decoder never makes one): map_event raises InvalidOperation on it, see
# test_update_whose_before_image_holds_a_signalling_nan_maps_or_raises_a_mapping_error.
DECIMALS = st.decimals().filter(lambda d: not d.is_snan())
SCALARS = st.one_of(
    st.none(), st.booleans(), INTS, st.floats(), DECIMALS, PII, st.text(max_size=12),
    st.dates(), st.datetimes(timezones=st.none() | st.just(UTC)), st.times(),
)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner),
                      max_leaves=8)
# What a JSON column's text may hold (MariaDB JSON arrives as text): huge numbers included.
JSON_DATA = st.recursive(
    st.none() | st.booleans() | INTS | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8)
JSON_TEXT = st.builds(json.dumps, JSON_DATA) | st.sampled_from(["1e999", "NaN", "[1, 2.5, null]", "{"])
# Each column: mostly a value of its usual shape, else anything at all, so both outcomes are explored.
USUAL = {
    "id": st.integers(min_value=0) | PII | WIDE,
    "email": PII,
    "s": PII | st.none(),
    "i": INTS | st.from_regex(r"[+-]?[0-9]{1,30}", fullmatch=True),
    "n": st.floats() | INTS | DECIMALS,
    "d": DECIMALS | PII | INTS,
    "b": st.booleans() | st.integers(0, 1),
    "day": st.integers(-10**6, 10**6) | st.dates() | PII,
    "t": st.integers(-10**14, 10**14) | st.datetimes() | PII,
    "j": JSON_TEXT | VALUES,
}
ROWS = st.fixed_dictionaries({column: st.one_of(usual, usual, usual, VALUES)
                             for column, usual in USUAL.items()})
OPS = st.sampled_from([Op.CREATE, Op.READ, Op.UPDATE, Op.DELETE])


def store_json(value: Any) -> bytes:
    """Serialise as the store does (cdc_sync.adapters.store._recordset)."""
    return orjson.dumps(value, default=str)


@settings(max_examples=300)
@given(op=OPS, table=st.sampled_from(["users", "orders"]), before=ROWS, after=ROWS)
def test_mapping_arbitrary_rows_raises_only_mapping_errors_without_values(
    op: Op, table: str, before: dict[str, Any], after: dict[str, Any]
) -> None:
    ev = event(op, table, before=before, after=None if op is Op.DELETE else after, key={"id": 1})
    try:
        change = map_event(ev, ALL_TYPES)
    except MappingError as error:
        assert "PII-" not in str(error)
        return
    assert change is not None
    assert change.deleted or table != "users" or change.identifiers
    assert all(value for _, value in change.identifiers)
    assert change.entity is not None


@settings(max_examples=300)
@given(op=OPS, table=st.sampled_from(["users", "orders"]), before=ROWS, after=ROWS)
def test_whatever_maps_the_store_can_serialise(
    op: Op, table: str, before: dict[str, Any], after: dict[str, Any]
) -> None:
    ev = event(op, table, before=before, after=None if op is Op.DELETE else after, key={"id": 1})
    try:
        change = map_event(ev, ALL_TYPES)
    except MappingError:
        return
    assert change is not None and change.entity is not None
    store_json(dict(change.attributes))
    store_json(dict(change.before) if change.before is not None else None)
    store_json(dict(change.entity.data) if change.entity.data is not None else None)
    store_json([change.row_key, list(change.identifiers), change.owner])
    json.dumps([dict(change.attributes), change.entity.data], allow_nan=False)  # strict JSON, too


# A table of JSON-ish columns only, kept whole as an entity: most rows map, so the
# serialiser meets every shape the mapping lets through.
JSONY = MappingConfig.model_validate({"tables": {"shop:public.users": {
    "identifiers": {"user_id": "id"},
    "attributes": {"j": {"column": "j", "type": "json"}, "n": {"column": "n", "type": "number"},
                   "d": {"column": "d", "type": "decimal"}, "s": "s"},
    "entity": {"kind": "user", "id": "id"},
}}})
JSONY_ROWS = st.fixed_dictionaries({
    "id": st.integers(0, 2**63), "j": JSON_TEXT | JSON_DATA | VALUES, "n": INTS | st.floats() | DECIMALS,
    "d": DECIMALS | INTS | st.floats(), "s": st.text() | INTS | DECIMALS, "x": VALUES,
})


@settings(max_examples=300)
@given(op=OPS, before=JSONY_ROWS, after=JSONY_ROWS)
def test_whatever_maps_from_json_columns_the_store_can_serialise(
    op: Op, before: dict[str, Any], after: dict[str, Any]
) -> None:
    ev = event(op, before=before, after=None if op is Op.DELETE else after, key={"id": 1})
    try:
        change = map_event(ev, JSONY)
    except MappingError:
        return
    assert change is not None and change.entity is not None
    store_json(dict(change.attributes))
    store_json(dict(change.before) if change.before is not None else None)
    store_json(dict(change.entity.data) if change.entity.data is not None else None)


@st.composite
def holding_a_wide_int(draw: st.DrawFn) -> Any:
    """A JSON-like value with an integer wider than 64 bits somewhere inside."""
    value: Any = draw(WIDE)
    for _ in range(draw(st.integers(0, 3))):
        if draw(st.booleans()):
            items = draw(st.lists(JSON_DATA.filter(lambda v: not _wide_inside(v)), max_size=2))
            items.insert(draw(st.integers(0, len(items))), value)
            value = items
        else:
            siblings = draw(st.dictionaries(st.text(max_size=4), st.none() | st.text(max_size=4), max_size=2))
            value = {**siblings, draw(st.text(max_size=4)): value}
    return value


WIDER_THAN_64_BITS = "column 'v' holds an integer wider than 64 bits, which the store cannot write"


def _wide_inside(value: Any) -> bool:
    if isinstance(value, list):
        return any(_wide_inside(v) for v in value)
    if isinstance(value, dict):
        return any(_wide_inside(v) for v in value.values())
    return isinstance(value, int) and not -(2**63) <= value <= 2**64 - 1


@given(holding_a_wide_int(), st.booleans())
def test_json_attribute_holding_an_integer_wider_than_64_bits_is_a_mapping_error(
        value: Any, as_text: bool) -> None:
    with pytest.raises(MappingError, match=WIDER_THAN_64_BITS):
        x_of(json.dumps(value) if as_text else value, {"type": "json"})


@given(holding_a_wide_int())
def test_entity_column_holding_an_integer_wider_than_64_bits_is_a_mapping_error(value: Any) -> None:
    after = {"id": 9, "user_id": 1, "status": "placed", "lines": value}
    with pytest.raises(MappingError, match="shop:public.orders: column 'lines' has no JSON form"):
        map_event(event(Op.CREATE, "orders", after=after), MAPPING)


@given(WIDE, st.sampled_from(["integer", "number"]))
def test_number_attribute_wider_than_64_bits_is_a_mapping_error(value: int, kind: str) -> None:
    with pytest.raises(MappingError, match=WIDER_THAN_64_BITS):
        x_of(value, {"type": kind})


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


# orjson (the store's serialiser) refuses documents nested deeper than 255 levels; the decoder's
# orjson.loads takes up to 1024, so such a column arrives, maps, and fails at write time.
DEEP = 300


@pytest.mark.parametrize("as_text", [False, True], ids=["decoded", "json-text"])
def test_json_attribute_nested_deeper_than_the_store_can_write_is_a_mapping_error(as_text: bool) -> None:
    value = _nested(DEEP)
    with pytest.raises(MappingError):
        x_of(json.dumps(value) if as_text else value, {"type": "json"})


def test_entity_column_nested_deeper_than_the_store_can_write_is_a_mapping_error() -> None:
    with pytest.raises(MappingError):
        map_event(event(Op.CREATE, "orders", after={"id": 9, "user_id": 1, "deep": _nested(DEEP)}), MAPPING)


@pytest.mark.parametrize("text", ['"\\ud800"', '{"\\udfff": 1}', '["ok", "\\ud83d"]'])
def test_json_text_with_a_lone_surrogate_is_a_mapping_error(text: str) -> None:
    with pytest.raises(MappingError, match="column 'v' is not a valid json value"):
        x_of(text, {"type": "json"})


def test_json_text_with_a_surrogate_pair_is_kept() -> None:
    assert x_of('"\\ud83d\\ude00"', {"type": "json"}) == "\U0001F600"


# --- the documented and the demo configuration -----------------------------------------------


def test_the_documented_example_is_a_valid_mapping() -> None:
    doc = (ROOT / "docs" / "mapping.md").read_text()
    block = doc.split("```yaml\n", 1)[1].split("```", 1)[0]
    mapping = MappingConfig.model_validate(yaml.safe_load(block)["mapping"])
    assert "shop:public.users" in mapping.tables


def test_the_demo_configuration_is_a_valid_mapping() -> None:
    raw = yaml.safe_load((ROOT / "config" / "cdc-sync.yaml").read_text())["mapping"]
    mapping = MappingConfig.model_validate(raw)
    assert mapping.tables["shop:public.cart_items"].owner is not None
    assert mapping.tables["shop:public.cart_items"].owner.entity == "cart"


def test_the_demo_configuration_maps_a_cart_item_to_its_cart() -> None:
    raw = yaml.safe_load((ROOT / "config" / "cdc-sync.yaml").read_text())["mapping"]
    change = mapped(event(Op.CREATE, "cart_items", after=CART_ITEM), MappingConfig.model_validate(raw))
    assert change.owner == Reference("entity", "cart", "7")
    assert change.entity is not None and change.entity.kind == "cart_item"
