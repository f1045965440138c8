"""Decode stage: Debezium records from Kafka become ChangeEvents and their siblings.

Fixtures in tests/fixtures/envelopes/ are Kafka records as
`{"topic", "partition", "offset", "key", "value"}`, where `key` and `value` are the JSON
documents the JsonConverter writes (Debezium 3.x envelopes); tests serialise them back to bytes.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import decimal
import json
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdc_sync.core.errors import DecodeError, PoisonError
from cdc_sync.core.events import (
    UNAVAILABLE_VALUE,
    ChangeEvent,
    Decoded,
    Heartbeat,
    Op,
    RecordRef,
    SchemaChange,
    Tombstone,
    TransactionMarker,
    decode,
)

FIXTURES = Path(__file__).parent.parent / "fixtures" / "envelopes"
PLACEHOLDER_BASE64 = base64.b64encode(UNAVAILABLE_VALUE.encode()).decode()
PLACEHOLDER_UUID = "b68a35a7-17ad-35b3-af2a-ae46edb4545a"
REF = RecordRef(topic="shop.public.users", partition=0, offset=7)


# --- helpers ----------------------------------------------------------------------------------


def load(name: str) -> dict[str, Any]:
    """A fixture record as plain JSON data (a fresh copy each time)."""
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return data


def as_bytes(document: Any) -> bytes | None:
    return None if document is None else json.dumps(document).encode()


def decode_record(record: dict[str, Any]) -> Decoded:
    ref = RecordRef(record["topic"], record["partition"], record["offset"])
    return decode(ref, as_bytes(record["key"]), as_bytes(record["value"]))


def decode_fixture(name: str) -> Decoded:
    return decode_record(load(name))


def change(name: str) -> ChangeEvent:
    result = decode_fixture(name)
    assert isinstance(result, ChangeEvent)
    return result


def decode_value(value: Any, key: Any = None, topic: str = "shop.public.users") -> Decoded:
    key = {"id": 6} if key is None else key
    return decode(RecordRef(topic, 0, 0), as_bytes(key), as_bytes(value))


def pg_value(**source: Any) -> dict[str, Any]:
    """The Postgres insert envelope, with source fields replaced (None removes one)."""
    value: dict[str, Any] = load("pg_insert")["value"]
    for field, new in source.items():
        if new is None:
            value["source"].pop(field, None)
        else:
            value["source"][field] = new
    return value


def maria_value(**source: Any) -> dict[str, Any]:
    value: dict[str, Any] = load("mariadb_insert")["value"]
    value["source"].update(source)
    return value


def typed_column(field_schema: dict[str, Any], raw: Any) -> Any:
    """Decode a one-column after image whose column has the given Connect field schema."""
    value = load("pg_insert")["value"]
    value["after"] = {"col": raw}
    row = {"type": "struct", "fields": [dict(field_schema, field="col")], "optional": True}
    schema = {"type": "struct", "fields": [dict(row, field="after")], "optional": False}
    event = decode_value({"schema": schema, "payload": value})
    assert isinstance(event, ChangeEvent) and event.after is not None
    return event.after["col"]


def logical(type_: str, name: str, **extra: Any) -> dict[str, Any]:
    return {"type": type_, "optional": True, "name": name, "version": 1, **extra}


def unscaled_base64(unscaled: int) -> str:
    length = (unscaled.bit_length() + 8) // 8
    return base64.b64encode(unscaled.to_bytes(length, "big", signed=True)).decode()


def decimal_schema(scale: int) -> dict[str, Any]:
    params = {"scale": str(scale), "connect.decimal.precision": "38"}
    return logical("bytes", "org.apache.kafka.connect.data.Decimal", parameters=params)


# --- Postgres, schemas disabled ---------------------------------------------------------------


def test_postgres_insert_decodes_source_table_and_after_image() -> None:
    event = change("pg_insert")
    assert (event.source, event.connector, event.database) == ("shop", "postgresql", "shop")
    assert (event.schema, event.table, event.op) == ("public", "users", Op.CREATE)
    assert event.key == {"id": 6}
    assert event.before is None
    assert event.after is not None and event.after["email"] == "nora.lindqvist@example.se"
    assert event.ref == RecordRef("shop.public.users", 0, 412)


def test_postgres_update_carries_before_and_after_images() -> None:
    event = change("pg_update")
    assert event.op is Op.UPDATE
    assert event.before is not None and event.before["city"] == "Stockholm"
    assert event.after is not None and event.after["city"] == "Gothenburg"


def test_postgres_delete_has_before_image_and_no_after() -> None:
    event = change("pg_delete")
    assert event.op is Op.DELETE
    assert event.before is not None and event.before["id"] == 6
    assert event.after is None


def test_delete_without_before_image_is_accepted() -> None:
    value = load("pg_delete")["value"]
    value["before"] = None  # REPLICA IDENTITY NOTHING: the key is all there is
    event = decode_value(value)
    assert isinstance(event, ChangeEvent) and event.before is None and event.key == {"id": 6}


def test_null_value_after_delete_is_a_tombstone_with_its_key() -> None:
    assert decode_fixture("pg_tombstone") == Tombstone(
        ref=RecordRef("shop.public.users", 0, 415), key={"id": 6}
    )


def test_snapshot_read_is_marked_as_snapshot() -> None:
    event = change("pg_snapshot_read")
    assert event.op is Op.READ and event.snapshot is True


def test_streamed_change_is_not_a_snapshot() -> None:
    assert change("pg_insert").snapshot is False


@pytest.mark.parametrize(
    "marker",
    ["true", "first", "first_in_data_collection", "last_in_data_collection", "last", "incremental"],
)
def test_every_snapshot_marker_means_snapshot(marker: str) -> None:
    event = decode_value(pg_value(snapshot=marker))
    assert isinstance(event, ChangeEvent) and event.snapshot is True


@pytest.mark.parametrize("marker", ["false", None])
def test_false_or_absent_snapshot_marker_means_streaming(marker: str | None) -> None:
    event = decode_value(pg_value(snapshot=marker))
    assert isinstance(event, ChangeEvent) and event.snapshot is False


def test_truncate_has_no_images_and_an_empty_key() -> None:
    event = change("pg_truncate")
    assert event.op is Op.TRUNCATE
    assert (event.before, event.after, dict(event.key)) == (None, None, {})
    assert event.qualified_table == "public.cart_items"


def test_schemas_disabled_values_stay_as_sent() -> None:
    event = change("pg_insert")
    assert event.after is not None
    assert event.after["birth_date"] == 11534
    assert event.after["created_at"] == "2025-06-02T09:14:07.318422Z"


def test_decimal_string_without_schema_stays_a_string() -> None:
    value = pg_value(table="products")
    value["after"] = {"id": 9, "sku": "MUG-CER-01", "price": "12.50"}
    event = decode_value(value, key={"id": 9})
    assert isinstance(event, ChangeEvent) and event.after == {
        "id": 9,
        "sku": "MUG-CER-01",
        "price": "12.50",
    }


def test_decoded_images_and_keys_are_read_only() -> None:
    event = change("pg_update")
    with pytest.raises(TypeError):
        event.after["city"] = "Malmo"  # type: ignore[index]
    with pytest.raises(TypeError):
        event.key["id"] = 7  # type: ignore[index]
    with pytest.raises(AttributeError):
        event.op = Op.DELETE  # type: ignore[misc]


# --- source metadata --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fixture", "qualified"),
    [("pg_insert", "public.users"), ("mariadb_insert", "crm.contacts")],
)
def test_qualified_table_is_schema_or_database_then_table(fixture: str, qualified: str) -> None:
    assert change(fixture).qualified_table == qualified


def test_commit_time_is_source_ts_us() -> None:
    assert change("pg_insert").commit_us == 1748855647318422


def test_commit_time_falls_back_to_source_ts_ms_in_microseconds() -> None:
    event = decode_value(pg_value(ts_us=None))
    assert isinstance(event, ChangeEvent) and event.commit_us == 1748855647318000


@pytest.mark.parametrize(
    ("fixture", "txid"),
    [
        ("pg_insert", "771"),
        ("pg_update_in_transaction", "772:27115104"),
        ("mariadb_insert", "0-1-1042"),
    ],
)
def test_txid_is_transaction_id_else_txId_else_gtid(fixture: str, txid: str) -> None:
    assert change(fixture).txid == txid


def test_txid_is_none_when_the_source_has_none() -> None:
    event = decode_value(maria_value(gtid=None))
    assert isinstance(event, ChangeEvent) and event.txid is None


def test_mariadb_insert_decodes_without_schema_name() -> None:
    event = change("mariadb_insert")
    assert (event.source, event.connector, event.database) == ("crm", "mariadb", "crm")
    assert (event.schema, event.table, event.op) == (None, "contacts", Op.CREATE)
    assert event.after is not None and event.after["email"] == " Nora.Lindqvist@Example.SE "


def test_mariadb_update_carries_both_images() -> None:
    event = change("mariadb_update")
    assert event.before is not None and event.before["loyalty_tier"] == "silver"
    assert event.after is not None and event.after["loyalty_tier"] == "gold"


# --- position ---------------------------------------------------------------------------------


def test_postgres_position_is_last_commit_lsn_then_event_lsn() -> None:
    assert change("pg_insert").position == (27114392, 27114680)


def test_postgres_null_last_commit_lsn_counts_as_zero() -> None:
    assert change("pg_snapshot_read").position == (0, 27101544)


def test_postgres_position_without_sequence_is_zero_then_lsn() -> None:
    event = decode_value(pg_value(sequence=None))
    assert isinstance(event, ChangeEvent) and event.position == (0, 27114680)


def test_later_postgres_transaction_compares_greater_despite_a_lower_event_lsn() -> None:
    # B began before A but committed after it, so its row change has the lower LSN
    a = decode_value(pg_value(sequence='["100","200"]', lsn=200))
    b = decode_value(pg_value(sequence='["300","150"]', lsn=150))
    assert isinstance(a, ChangeEvent) and isinstance(b, ChangeEvent)
    assert b.position > a.position


@pytest.mark.parametrize("sequence", ['["100","200"]', '["100", "200"]', '["\\u0031\\u0030\\u0030","200"]'])
def test_postgres_sequence_is_read_in_every_json_spelling(sequence: str) -> None:
    event = decode_value(pg_value(sequence=sequence, lsn=200))
    assert isinstance(event, ChangeEvent) and event.position == (100, 200)


def test_postgres_fixture_positions_follow_commit_order() -> None:
    names = [
        "pg_snapshot_read",
        "pg_insert",
        "pg_update",
        "pg_update_in_transaction",
        "pg_toast_update",
        "pg_update_schemas_enabled",
        "pg_delete",
        "pg_truncate",
    ]
    positions = [change(name).position for name in names]
    assert positions == sorted(positions)


def test_mariadb_position_is_binlog_file_number_position_and_row() -> None:
    assert change("mariadb_insert").position == (3, 48211, 0)


def test_mariadb_position_orders_a_later_binlog_file_after_a_larger_offset() -> None:
    later = decode_value(maria_value(file="mysql-bin.000004", pos=4, row=0))
    assert isinstance(later, ChangeEvent)
    assert later.position > change("mariadb_update").position


def test_mariadb_rows_of_one_binlog_event_are_ordered_by_row() -> None:
    first = decode_value(maria_value(row=0))
    second = decode_value(maria_value(row=1))
    assert isinstance(first, ChangeEvent) and isinstance(second, ChangeEvent)
    assert second.position > first.position


# --- schemas enabled --------------------------------------------------------------------------


def test_schemas_enabled_key_is_unwrapped() -> None:
    assert change("pg_update_schemas_enabled").key == {"id": 2041}


@pytest.mark.parametrize(
    ("column", "expected"),
    [
        ("lifetime_value", Decimal("1234.50")),
        ("loyalty_score", Decimal("87.125")),
        ("birth_date", date(1991, 9, 30)),
        ("last_login_at", datetime(2025, 6, 2, 9, 15, 27, 250000)),
        ("updated_at", datetime(2025, 6, 2, 9, 15, 27, 522400, tzinfo=UTC)),
        ("marketing_opt_in", True),
        ("email", "ines.moreau@example.fr"),
    ],
)
def test_schemas_enabled_after_image_is_typed(column: str, expected: Any) -> None:
    after = change("pg_update_schemas_enabled").after
    assert after is not None
    assert after[column] == expected and type(after[column]) is type(expected)


def test_schemas_enabled_before_image_is_typed() -> None:
    before = change("pg_update_schemas_enabled").before
    assert before is not None
    assert before["lifetime_value"] == Decimal("1184.50")
    assert before["loyalty_score"] == Decimal("86.5")


def test_schemas_enabled_source_metadata_matches_schemas_disabled_shape() -> None:
    event = change("pg_update_schemas_enabled")
    assert (event.source, event.qualified_table, event.op) == (
        "shop",
        "public.customers",
        Op.UPDATE,
    )
    assert event.position == (27116100, 27117184)


@pytest.mark.parametrize(
    ("schema", "raw", "expected"),
    [
        (logical("int32", "io.debezium.time.Date"), 6647, date(1988, 3, 14)),
        (logical("int32", "io.debezium.time.Date"), -1, date(1969, 12, 31)),
        (logical("int32", "org.apache.kafka.connect.data.Date"), 0, date(1970, 1, 1)),
        (logical("int32", "io.debezium.time.Time"), 34_200_250, time(9, 30, 0, 250000)),
        (
            logical("int32", "org.apache.kafka.connect.data.Time"),
            34_200_250,
            time(9, 30, 0, 250000),
        ),
        (logical("int64", "io.debezium.time.MicroTime"), 34_200_250_001, time(9, 30, 0, 250001)),
        (logical("int64", "io.debezium.time.NanoTime"), 34_200_250_001_999, time(9, 30, 0, 250001)),
        (
            logical("int64", "io.debezium.time.Timestamp"),
            1_699_954_200_250,
            datetime(2023, 11, 14, 9, 30, 0, 250000),
        ),
        (
            logical("int64", "org.apache.kafka.connect.data.Timestamp"),
            1_699_954_200_250,
            datetime(2023, 11, 14, 9, 30, 0, 250000),
        ),
        (
            logical("int64", "io.debezium.time.MicroTimestamp"),
            1_699_954_200_250_001,
            datetime(2023, 11, 14, 9, 30, 0, 250001),
        ),
        (
            logical("int64", "io.debezium.time.MicroTimestamp"),
            -1,
            datetime(1969, 12, 31, 23, 59, 59, 999999),
        ),
        (
            logical("int64", "io.debezium.time.NanoTimestamp"),
            1_699_954_200_250_001_999,
            datetime(2023, 11, 14, 9, 30, 0, 250001),
        ),
        (
            logical("string", "io.debezium.time.ZonedTimestamp"),
            "2025-06-02T11:15:27.5224+02:00",
            datetime(2025, 6, 2, 9, 15, 27, 522400, tzinfo=UTC),
        ),
        (
            logical("string", "io.debezium.time.ZonedTime"),
            "11:15:27.5+02:00",
            time(9, 15, 27, 500000, tzinfo=UTC),
        ),
    ],
    ids=lambda case: case["name"].rsplit(".", 1)[-1] if isinstance(case, dict) else None,
)
def test_temporal_logical_type_becomes_python_value(
    schema: dict[str, Any], raw: Any, expected: Any
) -> None:
    assert typed_column(schema, raw) == expected


@pytest.mark.parametrize(
    ("schema", "raw", "expected"),
    [
        (
            logical("int64", "io.debezium.time.MicroTimestamp"),
            9_223_372_036_825_200_000,
            datetime.max,
        ),
        (logical("int32", "io.debezium.time.Date"), 2_147_483_647, date.max),
        (logical("int32", "io.debezium.time.Date"), -2_147_483_648, date.min),
        (
            logical("string", "io.debezium.time.ZonedTimestamp"),
            "infinity",
            datetime.max.replace(tzinfo=UTC),
        ),
        (
            logical("string", "io.debezium.time.ZonedTimestamp"),
            "-infinity",
            datetime.min.replace(tzinfo=UTC),
        ),
        (logical("int64", "io.debezium.time.MicroTime"), 86_400_000_000, time.max),
    ],
)
def test_postgres_infinity_and_24_00_become_the_far_end(
    schema: dict[str, Any], raw: Any, expected: Any
) -> None:
    assert typed_column(schema, raw) == expected


@pytest.mark.parametrize(
    ("unscaled", "scale", "expected"),
    [
        (-1250, 2, Decimal("-12.50")),
        (0, 3, Decimal("0.000")),
        (10**37 + 1, 10, Decimal("1000000000000000000000000000.0000000001")),
    ],
)
def test_connect_decimal_is_exact_from_twos_complement_bytes(
    unscaled: int, scale: int, expected: Decimal
) -> None:
    decoded = typed_column(decimal_schema(scale), unscaled_base64(unscaled))
    assert decoded == expected and decoded.as_tuple() == expected.as_tuple()


def test_variable_scale_decimal_takes_its_scale_from_the_value() -> None:
    schema = logical("struct", "io.debezium.data.VariableScaleDecimal")
    raw = {"scale": 4, "value": unscaled_base64(-31415)}
    assert typed_column(schema, raw) == Decimal("-3.1415")


def test_array_elements_are_converted_by_their_item_schema() -> None:
    schema = {"type": "array", "optional": True, "items": logical("int32", "io.debezium.time.Date")}
    assert typed_column(schema, [0, 1, None]) == [date(1970, 1, 1), date(1970, 1, 2), None]


def test_plain_bytes_column_stays_base64_text() -> None:
    assert typed_column({"type": "bytes", "optional": True}, "AQID") == "AQID"


def test_typed_null_stays_null() -> None:
    assert typed_column(logical("int32", "io.debezium.time.Date"), None) is None


@pytest.mark.parametrize(
    ("schema", "raw"),
    [
        (logical("string", "io.debezium.time.ZonedTimestamp"), "nora.lindqvist@example.se"),
        (logical("string", "io.debezium.time.ZonedTimestamp"), "2025-06-02T09:15:27"),
        (logical("int64", "io.debezium.time.MicroTime"), 90_000_000_000),
        (logical("int64", "io.debezium.time.MicroTimestamp"), "1699954200250001"),
        (decimal_schema(2), "not base64!"),
        (logical("bytes", "org.apache.kafka.connect.data.Decimal"), "AeI6"),
        (logical("struct", "io.debezium.data.VariableScaleDecimal"), {"scale": "2"}),
    ],
)
def test_invalid_typed_value_is_a_decode_error_naming_the_column(
    schema: dict[str, Any], raw: Any
) -> None:
    with pytest.raises(DecodeError, match=r"after\.col is not a valid"):
        typed_column(schema, raw)


def test_decode_error_never_quotes_the_row_value() -> None:
    schema = logical("string", "io.debezium.time.ZonedTimestamp")
    with pytest.raises(DecodeError) as caught:
        typed_column(schema, "nora.lindqvist@example.se")
    assert "nora" not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


# --- TOAST placeholders -----------------------------------------------------------------------


def test_toast_placeholders_are_dropped_from_the_image_and_listed() -> None:
    event = change("pg_toast_update")
    assert event.unavailable == frozenset({"body", "photo", "tags"})
    assert event.after is not None
    assert set(event.after) == {"id", "product_id", "user_id", "rating", "updated_at"}


@pytest.mark.parametrize(
    "placeholder",
    [
        UNAVAILABLE_VALUE,
        PLACEHOLDER_BASE64,
        [UNAVAILABLE_VALUE],
        [PLACEHOLDER_BASE64],
        [PLACEHOLDER_UUID],
        list(UNAVAILABLE_VALUE.encode()),
        {UNAVAILABLE_VALUE: UNAVAILABLE_VALUE},
        json.dumps({UNAVAILABLE_VALUE: UNAVAILABLE_VALUE}, separators=(",", ":")),
    ],
    ids=["text", "bytea", "text[]", "bytea[]", "uuid[]", "int[]", "hstore", "hstore-json"],
)
def test_every_placeholder_form_marks_the_column_unavailable(placeholder: Any) -> None:
    value = pg_value()
    value["after"]["city"] = placeholder
    event = decode_value(value)
    assert isinstance(event, ChangeEvent) and event.after is not None
    assert "city" not in event.after and event.unavailable == {"city"}


@pytest.mark.parametrize(
    "lookalike",
    [UNAVAILABLE_VALUE + " ", [UNAVAILABLE_VALUE, UNAVAILABLE_VALUE], [95, 95], "Stockholm"],
)
def test_values_merely_resembling_the_placeholder_are_kept(lookalike: Any) -> None:
    value = pg_value()
    value["after"]["city"] = lookalike
    event = decode_value(value)
    assert isinstance(event, ChangeEvent) and event.after is not None
    assert event.after["city"] == lookalike and event.unavailable == frozenset()


def test_placeholder_in_before_image_is_listed_too() -> None:
    value = load("pg_update")["value"]
    value["before"]["phone"] = UNAVAILABLE_VALUE
    event = decode_value(value)
    assert isinstance(event, ChangeEvent) and event.before is not None
    assert "phone" not in event.before and event.unavailable == {"phone"}


# --- heartbeats, transactions, schema changes -------------------------------------------------


def test_heartbeat_topic_decodes_to_heartbeat_in_microseconds() -> None:
    assert decode_fixture("heartbeat") == Heartbeat(
        ref=RecordRef("__debezium-heartbeat.shop", 0, 1803), source="shop", ts_us=1748855650402000
    )


def test_heartbeat_on_a_custom_topic_is_recognised_by_its_shape() -> None:
    decoded = decode_value({"ts_ms": 1000}, key={"serverName": "crm"}, topic="beats.crm")
    assert decoded == Heartbeat(ref=RecordRef("beats.crm", 0, 0), source="crm", ts_us=1_000_000)


def test_heartbeat_without_server_name_takes_it_from_the_topic() -> None:
    decoded = decode_value({"ts_ms": 5}, key={}, topic="__debezium-heartbeat.crm")
    assert isinstance(decoded, Heartbeat) and decoded.source == "crm"


def test_schemas_enabled_heartbeat_is_unwrapped() -> None:
    schema = {
        "type": "struct",
        "fields": [{"type": "int64", "optional": False, "field": "ts_ms"}],
        "optional": False,
        "name": "io.debezium.connector.common.Heartbeat",
    }
    key = {"schema": None, "payload": {"serverName": "shop"}}
    decoded = decode_value({"schema": schema, "payload": {"ts_ms": 7}}, key=key, topic="hb")
    assert decoded == Heartbeat(ref=RecordRef("hb", 0, 0), source="shop", ts_us=7000)


@pytest.mark.parametrize(
    ("fixture", "status", "count"),
    [("transaction_begin", "BEGIN", None), ("transaction_end", "END", 2)],
)
def test_transaction_metadata_decodes_to_marker(
    fixture: str, status: str, count: int | None
) -> None:
    marker = decode_fixture(fixture)
    assert isinstance(marker, TransactionMarker)
    assert (marker.txid, marker.status, marker.event_count) == ("772:27115104", status, count)


def test_transaction_marker_id_matches_the_change_event_txid() -> None:
    marker = decode_fixture("transaction_begin")
    assert isinstance(marker, TransactionMarker)
    assert change("pg_update_in_transaction").txid == marker.txid


def test_schema_change_record_decodes_to_schema_change_for_skipping() -> None:
    assert decode_fixture("mariadb_schema_change") == SchemaChange(
        ref=RecordRef("crm", 0, 12), source="crm"
    )


# --- errors -----------------------------------------------------------------------------------


def with_envelope(change_it: Any) -> bytes | None:
    value = load("pg_insert")["value"]
    change_it(value)
    return as_bytes(value)


def _drop(*path: str) -> Any:
    def edit(value: dict[str, Any]) -> None:
        target = value
        for part in path[:-1]:
            target = target[part]
        del target[path[-1]]

    return edit


def _set(path: tuple[str, ...], new: Any) -> Any:
    def edit(value: dict[str, Any]) -> None:
        target = value
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = new

    return edit


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"", "value is empty"),
        (b'{"before": null, "after": ', "value is not valid JSON"),
        (b"\xff\xfe\x00", "value is not valid JSON"),
        (b"[1, 2]", "value is not a JSON object"),
        (b'"c"', "value is not a JSON object"),
        (with_envelope(_drop("op")), "value has no 'op'"),
        (with_envelope(_set(("op",), None)), "op is missing"),
        (with_envelope(_set(("op",), "x")), "op is not one of c, u, d, r, t"),
        (with_envelope(_set(("op",), ["c"])), "op is not one of c, u, d, r, t"),
        (with_envelope(_set(("op",), "m")), "logical decoding message"),
        (with_envelope(_drop("source")), "source is missing"),
        (with_envelope(_set(("source",), "shop")), "source is missing or not a JSON object"),
        (with_envelope(_drop("source", "name")), "source.name is missing"),
        (with_envelope(_drop("source", "connector")), "source.connector is missing"),
        (with_envelope(_drop("source", "db")), "source.db is missing"),
        (with_envelope(_drop("source", "table")), "source.table is missing"),
        (with_envelope(_set(("source", "schema"), 1)), "source.schema is not a string"),
        (with_envelope(_set(("source", "ts_us"), "soon")), "source.ts_us"),
        (with_envelope(_set(("source", "connector"), "sqlserver")), "source.connector is not"),
        (with_envelope(_set(("source", "sequence"), "[1]")), "source.sequence"),
        (with_envelope(_set(("source", "sequence"), '["x","1"]')), "source.sequence"),
        (with_envelope(_set(("source", "ts_us"), -1)), "source.ts_us is not a time between"),
        (with_envelope(_set(("source", "ts_us"), 253_402_300_800_000_000)), "source.ts_us is not a time"),
        (with_envelope(_set(("after",), None)), "op 'c' has no after image"),
        (with_envelope(_set(("after",), "row")), "after is not a JSON object"),
        (with_envelope(_set(("before",), [1])), "before is not a JSON object"),
    ],
)
def test_undecodable_value_raises_decode_error_with_reason(value: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode(REF, b'{"id": 6}', value)
    assert reason in str(caught.value)


def test_postgres_event_without_sequence_or_lsn_is_rejected() -> None:
    with pytest.raises(DecodeError, match=r"source\.lsn"):
        decode_value(pg_value(sequence=None, lsn=None))


def test_missing_commit_time_is_rejected() -> None:
    with pytest.raises(DecodeError, match=r"source\.ts_ms"):
        decode_value(pg_value(ts_us=None, ts_ms=None))


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ({"file": "binlog"}, "source.file"),
        ({"file": None}, "source.file"),
        ({"pos": None}, "source.pos"),
        ({"row": "0"}, "source.row"),
    ],
)
def test_mariadb_event_without_binlog_position_is_rejected(
    source: dict[str, Any], reason: str
) -> None:
    with pytest.raises(DecodeError, match=reason.replace(".", r"\.")):
        decode_value(maria_value(**source))


@pytest.mark.parametrize(
    ("key", "reason"),
    [(b"", "key is empty"), (b"{", "key is not valid JSON"), (b"[6]", "key is not a JSON object")],
)
def test_undecodable_key_raises_decode_error(key: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        decode(REF, key, as_bytes(pg_value()))


@pytest.mark.parametrize("key", [None, b"null", b"{}"])
def test_tombstone_without_a_key_is_rejected(key: bytes | None) -> None:
    with pytest.raises(DecodeError, match="tombstone"):
        decode(REF, key, None)


def test_heartbeat_without_ts_ms_is_rejected() -> None:
    with pytest.raises(DecodeError, match=r"value\.ts_ms"):
        decode_value({"ts_ms": "now"}, key={"serverName": "shop"}, topic="__debezium-heartbeat.x")


def test_transaction_marker_with_non_integer_event_count_is_rejected() -> None:
    value = load("transaction_end")["value"]
    value["event_count"] = "two"
    with pytest.raises(DecodeError, match="event_count"):
        decode_value(value, key={"id": value["id"]}, topic="shop.transaction")


def test_decode_error_is_poison_so_the_record_is_dead_lettered() -> None:
    with pytest.raises(PoisonError):
        decode(REF, None, b"not json")


# --- properties -------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.sampled_from([UNAVAILABLE_VALUE, PLACEHOLDER_BASE64, "c", "u", "postgresql", "mariadb"]),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
FIXTURE_NAMES = sorted(path.stem for path in FIXTURES.glob("*.json"))


@settings(max_examples=300, deadline=None)
@given(key=st.none() | st.binary(max_size=64), value=st.none() | st.binary(max_size=256))
def test_arbitrary_bytes_decode_or_raise_only_decode_error(
    key: bytes | None, value: bytes | None
) -> None:
    with contextlib.suppress(DecodeError):
        decode(REF, key, value)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), replacement=json_values)
def test_any_json_in_any_envelope_field_decodes_or_raises_only_decode_error(
    data: st.DataObject, replacement: Any
) -> None:
    record = load(data.draw(st.sampled_from(FIXTURE_NAMES)))
    container, slot = record, data.draw(st.sampled_from(["key", "value"]))
    for _ in range(data.draw(st.integers(0, 4))):  # down to value.payload.after.<column>
        node = container[slot]
        if not isinstance(node, dict) or not node:
            break
        container, slot = node, data.draw(st.sampled_from(sorted(node)))
    container[slot] = copy.deepcopy(replacement)
    with contextlib.suppress(DecodeError):
        decode_record(record)


plain_columns = st.dictionaries(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=10),
    st.one_of(
        st.tuples(st.just("int64"), st.integers(-(2**63), 2**63 - 1)),
        st.tuples(st.just("string"), st.text(max_size=20)),
        st.tuples(st.just("boolean"), st.booleans()),
        st.tuples(st.just("float64"), st.floats(allow_nan=False)),
        st.tuples(st.just("string"), st.none()),
    ),
    max_size=8,
)


@settings(max_examples=200, deadline=None)
@given(columns=plain_columns, key_id=st.integers(0, 2**63 - 1))
def test_schemas_enabled_and_disabled_forms_decode_to_the_same_plain_values(
    columns: dict[str, tuple[str, Any]], key_id: int
) -> None:
    row = {name: value for name, (_, value) in columns.items()}
    value = pg_value()
    value["after"] = row
    fields = [{"type": t, "optional": True, "field": name} for name, (t, _) in columns.items()]
    row_schema = {"type": "struct", "fields": fields, "optional": True, "field": "after"}
    schema = {"type": "struct", "fields": [row_schema], "optional": False}
    key_schema = {"type": "struct", "fields": [{"type": "int64", "field": "id"}]}
    plain = decode(REF, as_bytes({"id": key_id}), as_bytes(value))
    wrapped = decode(
        REF,
        as_bytes({"schema": key_schema, "payload": {"id": key_id}}),
        as_bytes({"schema": schema, "payload": value}),
    )
    assert plain == wrapped


@settings(max_examples=200, deadline=None)
@given(unscaled=st.integers(-(10**40), 10**40), scale=st.integers(0, 30))
def test_connect_decimal_round_trips_exactly(unscaled: int, scale: int) -> None:
    decoded = typed_column(decimal_schema(scale), unscaled_base64(unscaled))
    assert decoded.as_tuple().exponent == -scale
    with decimal.localcontext(prec=100):
        assert decoded.scaleb(scale) == unscaled


@settings(max_examples=200, deadline=None)
@given(moment=st.datetimes())
def test_micro_timestamp_round_trips_to_the_same_wall_time(moment: datetime) -> None:
    micros = (moment - datetime(1970, 1, 1)) // timedelta(microseconds=1)
    schema = logical("int64", "io.debezium.time.MicroTimestamp")
    assert typed_column(schema, micros) == moment
