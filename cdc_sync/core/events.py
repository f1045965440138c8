"""Decode stage: one Kafka record written by a Debezium connector becomes one immutable value.

This is the only module that knows the Debezium envelope. It accepts both JsonConverter forms:
schemas disabled (the envelope itself) and schemas enabled (`{"schema": ..., "payload": ...}`,
the envelope is the payload). With a schema, Kafka Connect and Debezium logical types become
Python values (`Decimal`, `date`, `time`, `datetime`); without one, values stay as sent, because
a bare int or string cannot say whether it is a date or a decimal.

Choices worth knowing:

- Position (order within one source, compared as a tuple):
  - Postgres: `(last commit LSN, event LSN)` from `source.sequence` (`["lastCommitLsn","lsn"]`).
    pgoutput delivers whole transactions in commit order, but the LSNs of concurrent
    transactions interleave, so the event LSN alone can go backwards from one transaction to
    the next. Every event of a transaction carries the commit LSN of the transaction before
    it, which only grows; ties are broken by the event LSN, which grows within a transaction.
    A null last commit LSN (first transaction after a fresh start, snapshot reads) counts as
    0; without `sequence` the position is `(0, source.lsn)`.
  - MariaDB/MySQL: `(binlog file number, source.pos, source.row)`, the file number parsed from
    `source.file` such as `"mysql-bin.000003"`. `ts_ms` has whole-second precision there and is
    never used for order.
- `txid` prefers the `transaction.id` block (present with `provide.transaction.metadata`) so
  it matches `TransactionMarker.txid`; otherwise `source.txId` (Postgres) or `source.gtid`.
- `op == "m"` (a Postgres logical decoding message) is a `DecodeError`: it is no row change,
  and reaching the decoder means a message topic was subscribed by mistake; the dead-letter
  store says so instead of dropping it silently.
- Dates and timestamps beyond Python's range become `date.max`/`datetime.max` (`min` below
  it): that is how Postgres `infinity` arrives (a huge int64, or the text `"infinity"`). A time
  of exactly 24:00:00 (valid in Postgres) becomes `time.max`; other times outside one day
  (MySQL `TIME` is a duration) raise `DecodeError`.
- Plain `bytes` columns stay base64 strings in both forms, so the two forms agree.
- Error messages name the field that is wrong, never a row value: rows hold PII.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final, NamedTuple, TypeAlias, TypeGuard

from cdc_sync.core.errors import DecodeError

UNAVAILABLE_VALUE: Final = "__debezium_unavailable_value"
HEARTBEAT_TOPIC_PREFIX: Final = "__debezium-heartbeat"
SNAPSHOT_MARKERS: Final = frozenset(
    {"true", "first", "first_in_data_collection", "last_in_data_collection", "last", "incremental"}
)


# RecordRef and ChangeEvent are NamedTuples, not frozen dataclasses: just as immutable, and
# built once per record on the hot path, where a frozen dataclass costs several times more.
class RecordRef(NamedTuple):
    """Where a Kafka record came from: enough to find it again or to dead-letter it."""

    topic: str
    partition: int
    offset: int


class Op(StrEnum):
    """Debezium's row operation codes."""

    CREATE = "c"
    UPDATE = "u"
    DELETE = "d"
    READ = "r"
    TRUNCATE = "t"


class ChangeEvent(NamedTuple):
    """One row change (or snapshot read, or truncate) of one table in one source database.

    `source` is the logical server name (topic prefix); `key`, `before` and `after` are
    read-only column mappings (`key` empty when the record has none, images None when absent);
    `unavailable` names columns Debezium could not supply, removed from the images;
    `commit_us` is the source commit time; `position` orders events within one source.
    """

    ref: RecordRef
    source: str
    connector: str
    database: str
    schema: str | None
    table: str
    op: Op
    key: Mapping[str, Any]
    before: Mapping[str, Any] | None
    after: Mapping[str, Any] | None
    unavailable: frozenset[str]
    commit_us: int
    position: tuple[int, ...]
    snapshot: bool
    txid: str | None

    @property
    def qualified_table(self) -> str:
        """`schema.table` for Postgres, `database.table` for MariaDB/MySQL."""
        return f"{self.schema or self.database}.{self.table}"


@dataclass(frozen=True, slots=True)
class Tombstone:
    """The null-valued record Debezium writes after a delete, for log compaction."""

    ref: RecordRef
    key: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A Debezium heartbeat: the source was alive at `ts_us` even if no row changed."""

    ref: RecordRef
    source: str | None
    ts_us: int


@dataclass(frozen=True, slots=True)
class TransactionMarker:
    """A transaction metadata record: BEGIN, or END with the number of events."""

    ref: RecordRef
    txid: str
    status: str
    event_count: int | None


@dataclass(frozen=True, slots=True)
class SchemaChange:
    """A schema-change topic record (DDL); kept only so callers can skip it explicitly."""

    ref: RecordRef
    source: str | None


Decoded: TypeAlias = ChangeEvent | Tombstone | Heartbeat | TransactionMarker | SchemaChange

_EMPTY: Final[Mapping[str, Any]] = MappingProxyType({})
_OPS: Final = frozenset(op.value for op in Op)
_NEEDS_AFTER: Final = frozenset({Op.CREATE, Op.UPDATE, Op.READ})
_BINLOG_CONNECTORS: Final = frozenset({"mariadb", "mysql"})
_TRANSACTION_STATUSES: Final = frozenset({"BEGIN", "END"})
EPOCH: Final = datetime(1970, 1, 1)  # naive: Connect's timestamps carry no zone
EPOCH_DATE: Final = date(1970, 1, 1)
_DAY_US: Final = 86_400_000_000
_DECIMAL: Final = "org.apache.kafka.connect.data.Decimal"


def decode(ref: RecordRef, key: bytes | None, value: bytes | None,
           loads: Callable[[bytes], Any] = json.loads) -> Decoded:
    """Decode one Kafka record from a Debezium source connector.

    In: the record's ref and its raw key and value bytes (JsonConverter output, schemas
    enabled or disabled; None for a Kafka null).
    Out: a ChangeEvent, Tombstone, Heartbeat, TransactionMarker or SchemaChange.
    `loads` parses JSON bytes; the edge may pass a faster parser than the standard library's.
    Raises DecodeError (a PoisonError) naming what is wrong, never quoting row values.
    """
    key_fields = _decode_key(key, loads)
    schema, payload = _parse_part(value, "value", loads)
    if payload is None:
        return _tombstone(ref, key_fields)
    if not isinstance(payload, dict):
        raise DecodeError("value is not a JSON object")
    return _decode_payload(ref, key_fields, schema, payload)


def _decode_payload(
    ref: RecordRef,
    key: Mapping[str, Any],
    schema: Mapping[str, Any] | None,
    payload: dict[str, Any],
) -> Decoded:
    """Tell the record kinds apart by topic and shape, then decode the one found."""
    if _is_heartbeat(ref.topic, key, payload):
        return _heartbeat(ref, key, payload)
    if "op" in payload:
        return _change_event(ref, key, schema, payload)
    status = payload.get("status")
    if isinstance(status, str) and status in _TRANSACTION_STATUSES and "id" in payload:
        return _transaction_marker(ref, status, payload)
    if "ddl" in payload or "tableChanges" in payload:
        return SchemaChange(ref=ref, source=_source_name(payload))
    raise DecodeError(
        "value has no 'op' and is not a heartbeat, transaction marker or schema change"
    )


# --- JSON and the JsonConverter wrapper -------------------------------------------------------


def _parse_part(raw: bytes | None, part: str,
                loads: Callable[[bytes], Any]) -> tuple[Mapping[str, Any] | None, Any]:
    """Parse a key or value into (schema or None, payload); a Kafka null gives (None, None)."""
    if raw is None:
        return None, None
    if not raw:
        raise DecodeError(f"{part} is empty")
    try:
        document = loads(raw)
    except (ValueError, RecursionError):
        # from None: the parser's message may quote the bytes, which may be PII
        raise DecodeError(f"{part} is not valid JSON") from None
    return _unwrap(document)


def _unwrap(document: Any) -> tuple[Mapping[str, Any] | None, Any]:
    """Split the schemas-enabled form `{"schema": ..., "payload": ...}`; pass others through."""
    if isinstance(document, dict) and document.keys() == {"schema", "payload"}:
        schema = document["schema"]
        if schema is None or isinstance(schema, dict):
            return schema, document["payload"]
    return None, document


def _decode_key(raw: bytes | None, loads: Callable[[bytes], Any]) -> Mapping[str, Any]:
    """Decode the Kafka key into its columns; no key gives an empty mapping."""
    schema, payload = _parse_part(raw, "key", loads)
    if payload is None:
        return _EMPTY
    if not isinstance(payload, dict):
        raise DecodeError("key is not a JSON object")
    return MappingProxyType(_convert_row(payload, _struct_fields(schema), "key"))


# --- record kinds -----------------------------------------------------------------------------


def _tombstone(ref: RecordRef, key: Mapping[str, Any]) -> Tombstone:
    """A null value: only meaningful with a key, which names the deleted row."""
    if not key:
        raise DecodeError("value is null (tombstone) but the key is missing or empty")
    return Tombstone(ref=ref, key=key)


def _is_heartbeat(topic: str, key: Mapping[str, Any], payload: Mapping[str, Any]) -> bool:
    """Heartbeats live on `__debezium-heartbeat.*`, or look like `{"ts_ms"}` keyed by server."""
    if topic.startswith(HEARTBEAT_TOPIC_PREFIX):
        return True
    return payload.keys() == {"ts_ms"} and "serverName" in key


def _heartbeat(ref: RecordRef, key: Mapping[str, Any], payload: Mapping[str, Any]) -> Heartbeat:
    """Build a Heartbeat; the source comes from the key, else from the topic suffix."""
    server = key.get("serverName")
    if not isinstance(server, str):
        prefix = HEARTBEAT_TOPIC_PREFIX + "."
        server = ref.topic.removeprefix(prefix) if ref.topic.startswith(prefix) else None
    return Heartbeat(ref=ref, source=server, ts_us=_required_int(payload, "ts_ms", "value") * 1000)


def _transaction_marker(
    ref: RecordRef, status: str, payload: Mapping[str, Any]
) -> TransactionMarker:
    """Build a TransactionMarker from a transaction metadata topic record."""
    count = payload.get("event_count")
    if count is not None and not is_json_int(count):
        raise DecodeError("transaction event_count is not an integer")
    txid = _required_str(payload, "id", "transaction")
    return TransactionMarker(ref=ref, txid=txid, status=status, event_count=count)


def _source_name(payload: Mapping[str, Any]) -> str | None:
    """source.name of a schema-change record, when it has one."""
    source = payload.get("source")
    name = source.get("name") if isinstance(source, dict) else None
    return name if isinstance(name, str) else None


def _change_event(
    ref: RecordRef,
    key: Mapping[str, Any],
    schema: Mapping[str, Any] | None,
    envelope: Mapping[str, Any],
) -> ChangeEvent:
    """Build a ChangeEvent from a Debezium data change envelope."""
    op = _op(envelope.get("op"))
    source = _source(envelope)
    connector = _required_str(source, "connector", "source")
    before, after, unavailable = _images(op, envelope, _struct_fields(schema))
    return ChangeEvent(
        ref=ref,
        source=_required_str(source, "name", "source"),
        connector=connector,
        database=_required_str(source, "db", "source"),
        schema=_optional_str(source, "schema", "source"),
        table=_required_str(source, "table", "source"),
        op=op,
        key=key,
        before=before,
        after=after,
        unavailable=unavailable,
        commit_us=_commit_us(source),
        position=_position(connector, source),
        snapshot=_is_snapshot(source),
        txid=_txid(envelope, source),
    )


# --- envelope fields --------------------------------------------------------------------------


def _op(raw: Any) -> Op:
    """The envelope's op as an Op; messages and unknown codes are errors."""
    if raw == "m":
        raise DecodeError("op 'm' is a logical decoding message, not a row change")
    if isinstance(raw, str) and raw in _OPS:
        return Op(raw)
    if raw is None:
        raise DecodeError("op is missing")
    raise DecodeError("op is not one of c, u, d, r, t")


def _source(envelope: Mapping[str, Any]) -> Mapping[str, Any]:
    """The envelope's source block, which every change event must carry."""
    source = envelope.get("source")
    if not isinstance(source, dict):
        raise DecodeError("source is missing or not a JSON object")
    return source


def _images(
    op: Op, envelope: Mapping[str, Any], envelope_fields: Mapping[str, Mapping[str, Any]]
) -> tuple[Mapping[str, Any] | None, Mapping[str, Any] | None, frozenset[str]]:
    """Decode before and after, and collect the columns Debezium could not supply."""
    if op is Op.TRUNCATE:
        return None, None, frozenset()
    before, missing_before = _image(envelope, "before", envelope_fields)
    after, missing_after = _image(envelope, "after", envelope_fields)
    if after is None and op in _NEEDS_AFTER:
        raise DecodeError(f"op '{op.value}' has no after image")
    return before, after, missing_before | missing_after


def _image(
    envelope: Mapping[str, Any], side: str, envelope_fields: Mapping[str, Mapping[str, Any]]
) -> tuple[Mapping[str, Any] | None, frozenset[str]]:
    """One row image without its placeholder columns, and the names of those columns."""
    raw = envelope.get(side)
    if raw is None:
        return None, frozenset()
    if not isinstance(raw, dict):
        raise DecodeError(f"{side} is not a JSON object")
    # Inlined scalar test: this runs for every column of every record.
    present = {
        column: value for column, value in raw.items()
        if (kind := value.__class__) in _PLAIN
        or (value not in _UNAVAILABLE_SCALARS if kind is str else not _is_unavailable(value))
    }
    columns = _struct_fields(envelope_fields.get(side))
    image = MappingProxyType(_convert_row(present, columns, side) if columns else present)
    unavailable = frozenset(raw.keys() - present.keys()) if len(present) != len(raw) else frozenset()
    return image, unavailable


_LAST_US: Final = 253_402_300_800_000_000  # 10000-01-01: beyond, no timestamp type holds it


def _commit_us(source: Mapping[str, Any]) -> int:
    """Source commit time in µs: source.ts_us when present, else source.ts_ms * 1000."""
    if source.get("ts_us") is not None:
        field, us = "ts_us", _required_int(source, "ts_us", "source")
    else:
        field, us = "ts_ms", _required_int(source, "ts_ms", "source") * 1000
    if not 0 <= us < _LAST_US:
        raise DecodeError(f"source.{field} is not a time between 1970 and 9999")
    return us


def _is_snapshot(source: Mapping[str, Any]) -> bool:
    """True for initial, blocking and incremental snapshot reads."""
    marker = source.get("snapshot")
    return marker is True or (isinstance(marker, str) and marker in SNAPSHOT_MARKERS)


def _txid(envelope: Mapping[str, Any], source: Mapping[str, Any]) -> str | None:
    """transaction.id, else source.txId (Postgres), else source.gtid (MariaDB/MySQL)."""
    transaction = envelope.get("transaction")
    if isinstance(transaction, dict) and isinstance(transaction.get("id"), str):
        return str(transaction["id"])
    for field in ("txId", "gtid"):
        value = source.get(field)
        if isinstance(value, str) or is_json_int(value):
            return str(value)
    return None


# --- position ---------------------------------------------------------------------------------


def _position(connector: str, source: Mapping[str, Any]) -> tuple[int, ...]:
    """Order within one source; see the module docstring for why each shape is chosen."""
    if connector == "postgresql":
        return _wal_position(source)
    if connector in _BINLOG_CONNECTORS:
        return _binlog_position(source)
    raise DecodeError("source.connector is not postgresql, mariadb or mysql")


def _wal_position(source: Mapping[str, Any]) -> tuple[int, int]:
    """Postgres: (last commit LSN, event LSN); 0 stands for a null last commit LSN."""
    sequence = source.get("sequence")
    if sequence is None:
        return 0, _required_int(source, "lsn", "source")
    last_commit, lsn = _parse_sequence(sequence)
    return last_commit or 0, lsn if lsn is not None else _required_int(source, "lsn", "source")


def _parse_sequence(sequence: Any) -> tuple[int | None, int | None]:
    """Parse source.sequence, a JSON string holding `[lastCommitLsn, lsn]` as strings or nulls."""
    items = _sequence_items(sequence) if isinstance(sequence, str) else None
    if not (isinstance(items, list) and len(items) == 2):
        raise DecodeError("source.sequence is not a JSON [lastCommitLsn, lsn] pair")
    return _lsn(items[0]), _lsn(items[1])


def _sequence_items(sequence: str) -> Any:
    """The items of source.sequence: the usual compact form `["1","2"]` is split by hand (this
    runs for every Postgres event), anything else goes to the JSON parser."""
    if sequence.startswith('["') and sequence.endswith('"]') and sequence.count('"') == 4:
        first, sep, second = sequence[2:-2].partition('",')
        second = second.lstrip(" ")
        if sep and second.startswith('"') and first.isdigit() and second[1:].isdigit():
            return [first, second[1:]]
    try:
        return json.loads(sequence)
    except (ValueError, RecursionError):
        return None


def _lsn(item: Any) -> int | None:
    """One LSN of source.sequence: a decimal string, an integer or null."""
    if item is None:
        return None
    if is_json_int(item):
        return int(item)
    if isinstance(item, str) and item.isdigit() and len(item) <= 20:
        return int(item)
    raise DecodeError("source.sequence holds an LSN that is not a non-negative integer")


def _binlog_position(source: Mapping[str, Any]) -> tuple[int, int, int]:
    """MariaDB/MySQL: (binlog file number, position in the file, row within the event)."""
    file_number = _binlog_file_number(source.get("file"))
    return (
        file_number,
        _required_int(source, "pos", "source"),
        _required_int(source, "row", "source"),
    )


def _binlog_file_number(file: Any) -> int:
    """The numeric suffix of a binlog file name: 'mysql-bin.000003' gives 3."""
    suffix = file.rpartition(".")[2] if isinstance(file, str) else ""
    if not (suffix.isdigit() and len(suffix) <= 20):
        raise DecodeError("source.file is not a binlog file name like 'mysql-bin.000003'")
    return int(suffix)


# --- row values -------------------------------------------------------------------------------


_UNAVAILABLE_BYTES: Final = tuple(UNAVAILABLE_VALUE.encode())
_UNAVAILABLE_BASE64: Final = base64.b64encode(UNAVAILABLE_VALUE.encode()).decode()
# Debezium's placeholder uuid for uuid[] columns: the name-based UUID of the placeholder bytes
_UNAVAILABLE_UUID: Final = "b68a35a7-17ad-35b3-af2a-ae46edb4545a"
_UNAVAILABLE_SCALARS: Final = frozenset(
    {
        UNAVAILABLE_VALUE,
        _UNAVAILABLE_BASE64,
        json.dumps({UNAVAILABLE_VALUE: UNAVAILABLE_VALUE}, separators=(",", ":")),
    }
)
_PLAIN: Final = frozenset({int, float, bool, type(None)})  # never a placeholder
_UNAVAILABLE_ELEMENTS: Final = frozenset(
    {UNAVAILABLE_VALUE, _UNAVAILABLE_BASE64, _UNAVAILABLE_UUID}
)


def _is_unavailable(value: Any) -> bool:
    """True when Debezium sent its placeholder (unchanged TOAST) instead of a value.

    Forms: the string, its base64 (bytea), a one-element array of either or of the placeholder
    uuid (text[], bytea[], uuid[]), the placeholder's bytes as integers (int[], bigint[]), and
    `{placeholder: placeholder}` (hstore, as a map or as JSON text).
    """
    if isinstance(value, str):
        return value in _UNAVAILABLE_SCALARS
    if isinstance(value, list):
        if len(value) == 1 and isinstance(value[0], str):
            return value[0] in _UNAVAILABLE_ELEMENTS
        return all(is_json_int(item) for item in value) and tuple(value) == _UNAVAILABLE_BYTES
    if isinstance(value, dict):
        return value == {UNAVAILABLE_VALUE: UNAVAILABLE_VALUE}
    return False


def _struct_fields(schema: Any) -> Mapping[str, Mapping[str, Any]]:
    """Field schemas of a Connect struct schema by field name; empty when there is no schema."""
    fields = schema.get("fields") if isinstance(schema, dict) else None
    if not isinstance(fields, list):
        return {}
    return {
        field["field"]: field
        for field in fields
        if isinstance(field, dict) and isinstance(field.get("field"), str)
    }


def _convert_row(
    row: Mapping[str, Any], columns: Mapping[str, Mapping[str, Any]], where: str
) -> dict[str, Any]:
    """Convert each column that has a field schema; columns without one stay as sent."""
    return {
        name: _convert_column(name, value, columns.get(name), where) for name, value in row.items()
    }


def _convert_column(name: str, value: Any, field: Mapping[str, Any] | None, where: str) -> Any:
    """Convert one column, turning any failure into a DecodeError that names the column."""
    if field is None:
        return value
    try:
        return _convert(value, field)
    except (ValueError, TypeError, ArithmeticError, RecursionError):
        kind = field.get("name") or field.get("type")
        # from None: the cause's message may quote the value, which may be PII
        raise DecodeError(f"{where}.{name} is not a valid {kind} value") from None


def _convert(value: Any, field: Mapping[str, Any]) -> Any:
    """Convert one value by its Connect field schema: logical types, then array elements."""
    if value is None:
        return None
    name = field.get("name")
    if name == _DECIMAL:
        return _decimal(value, field)
    converter = _LOGICAL_TYPES.get(name) if isinstance(name, str) else None
    if converter is not None:
        return converter(value)
    items = field.get("items")
    if field.get("type") == "array" and isinstance(value, list) and isinstance(items, dict):
        return [_convert(item, items) for item in value]
    return value


def _decimal(value: Any, field: Mapping[str, Any]) -> Decimal:
    """Connect Decimal: base64 two's-complement unscaled integer, scale in the parameters."""
    parameters = field.get("parameters")
    if not isinstance(parameters, dict):
        raise ValueError("Decimal schema without parameters")
    return _unscaled_decimal(value, int(_str(parameters.get("scale"))))


def _variable_scale_decimal(value: Any) -> Decimal:
    """Debezium VariableScaleDecimal: `{"scale": int, "value": base64 unscaled integer}`."""
    if not isinstance(value, dict):
        raise TypeError("VariableScaleDecimal is not a struct")
    return _unscaled_decimal(value.get("value"), _int(value.get("scale")))


def _unscaled_decimal(encoded: Any, scale: int) -> Decimal:
    """Exact Decimal from base64 big-endian two's-complement bytes and a scale."""
    unscaled = int.from_bytes(base64.b64decode(_str(encoded), validate=True), "big", signed=True)
    sign, digits, _ = Decimal(unscaled).as_tuple()
    # built from the tuple, not by arithmetic: the context's 28-digit precision must not round
    return Decimal((sign, digits, -scale))


def _date_from_days(value: Any) -> date:
    """Days since the epoch (Debezium and Connect Date)."""
    days = _int(value)
    try:
        return EPOCH_DATE + timedelta(days=days)
    except OverflowError:  # Postgres 'infinity' dates: keep the far end, not an error
        return date.max if days > 0 else date.min


def _datetime_from_us(micros: int) -> datetime:
    """Naive UTC wall time from µs since the epoch."""
    try:
        return EPOCH + timedelta(microseconds=micros)
    except OverflowError:  # Postgres 'infinity' timestamps arrive as a huge int64
        return datetime.max if micros > 0 else datetime.min


def _time_from_us(micros: int) -> time:
    """Time of day from µs since midnight; 24:00:00, which Postgres allows, is time.max."""
    if micros == _DAY_US:
        return time.max
    if not 0 <= micros < _DAY_US:
        raise ValueError("time of day out of range")
    return (EPOCH + timedelta(microseconds=micros)).time()


def _zoned_timestamp(value: Any) -> datetime:
    """Debezium ZonedTimestamp: ISO-8601 text with an offset, as an aware datetime in UTC."""
    text = _str(value)
    if text in ("infinity", "-infinity"):
        return (datetime.max if text == "infinity" else datetime.min).replace(tzinfo=UTC)
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        raise ValueError("ZonedTimestamp without an offset")
    return parsed.astimezone(UTC)


def _zoned_time(value: Any) -> time:
    """Debezium ZonedTime: ISO-8601 time with an offset, as an aware time in UTC."""
    parsed = time.fromisoformat(_str(value))
    if parsed.utcoffset() is None:
        raise ValueError("ZonedTime without an offset")
    return datetime.combine(EPOCH_DATE, parsed).astimezone(UTC).timetz()


_LOGICAL_TYPES: Final[Mapping[str, Callable[[Any], Any]]] = MappingProxyType(
    {
        "io.debezium.data.VariableScaleDecimal": _variable_scale_decimal,
        "io.debezium.time.Date": _date_from_days,
        "org.apache.kafka.connect.data.Date": _date_from_days,
        "io.debezium.time.Time": lambda value: _time_from_us(_int(value) * 1000),
        "org.apache.kafka.connect.data.Time": lambda value: _time_from_us(_int(value) * 1000),
        "io.debezium.time.MicroTime": lambda value: _time_from_us(_int(value)),
        "io.debezium.time.NanoTime": lambda value: _time_from_us(_int(value) // 1000),
        "io.debezium.time.Timestamp": lambda value: _datetime_from_us(_int(value) * 1000),
        "org.apache.kafka.connect.data.Timestamp": lambda v: _datetime_from_us(_int(v) * 1000),
        "io.debezium.time.MicroTimestamp": lambda value: _datetime_from_us(_int(value)),
        "io.debezium.time.NanoTimestamp": lambda value: _datetime_from_us(_int(value) // 1000),
        "io.debezium.time.ZonedTimestamp": _zoned_timestamp,
        "io.debezium.time.ZonedTime": _zoned_time,
    }
)


# --- small typed accessors --------------------------------------------------------------------


def is_json_int(value: object) -> TypeGuard[int]:
    """True for JSON integers (bool is an int in Python, not in JSON)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _int(value: Any) -> int:
    """The value as an int, or TypeError."""
    if not is_json_int(value):
        raise TypeError("expected an integer")
    return int(value)


def _str(value: Any) -> str:
    """The value as a str, or TypeError."""
    if not isinstance(value, str):
        raise TypeError("expected a string")
    return value


def _required_int(record: Mapping[str, Any], field: str, where: str) -> int:
    """record[field] as an int, or a DecodeError naming `where.field`."""
    value = record.get(field)
    if not is_json_int(value):
        raise DecodeError(f"{where}.{field} is missing or not an integer")
    return int(value)


def _required_str(record: Mapping[str, Any], field: str, where: str) -> str:
    """record[field] as a str, or a DecodeError naming `where.field`."""
    value = record.get(field)
    if not isinstance(value, str):
        raise DecodeError(f"{where}.{field} is missing or not a string")
    return value


def _optional_str(record: Mapping[str, Any], field: str, where: str) -> str | None:
    """record[field] as a str or None, or a DecodeError naming `where.field`."""
    value = record.get(field)
    if value is not None and not isinstance(value, str):
        raise DecodeError(f"{where}.{field} is not a string")
    return value
