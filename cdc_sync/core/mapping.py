"""Map stage: a ChangeEvent becomes a RowChange, as the `mapping:` section declares.

The section is validated by the pydantic models below (docs/mapping.md is its reference);
`map_event` applies it to one event. Pure: no I/O, no state.

Choices worth knowing:

- Output values are JSON-ready: decimals are strings (precision kept), dates are
  `YYYY-MM-DD`, datetimes are UTC with microseconds and a trailing `Z`
  (`2025-06-02T09:14:07.318422Z`, fixed width, so text order is time order). A naive
  datetime is taken to be UTC, as Debezium sends `timestamp without time zone`.
- A mapped column missing from the after image is an error (a typo in the mapping must not
  drop data silently), unless Debezium listed it as unavailable (unchanged TOAST): then it
  yields no attribute and no entity column, and the store keeps the previous value.
  Before images are read leniently: they may be partial or absent (replica identity).
- The map stage says what a row says now (its identifiers, owner, attributes and entity);
  reconcile compares that with what the store last saw from the same row, so an update asserts
  only what changed, and an identifier or templated attribute name the row no longer carries
  is released by it.
- A row's person identifiers (`identifiers`) may merge profiles; its `owner` is a reference
  (an order's user, a cart item's cart) that attaches the row to a person and never merges.
- Error messages name the table and column, never a row value: rows hold PII.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from enum import Enum
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from cdc_sync.core.errors import MappingError
from cdc_sync.core.events import EPOCH, EPOCH_DATE, ChangeEvent, Op, is_json_int
from cdc_sync.core.mutations import EntityChange, Reference, RowChange, Version
from cdc_sync.core.rows import same_json

Normalizer = Literal["none", "email", "lower", "strip", "phone"]
AttributeType = Literal["string", "integer", "number", "decimal", "boolean", "date", "datetime", "json"]
EpochUnit = Literal["us", "ms"]
AggregateFunction = Literal["count", "sum", "min", "max"]
JsonScalar = str | int | float | bool | None

_TOKEN: Final = r"[A-Za-z_][A-Za-z0-9_]*"
_PLACEHOLDER: Final = re.compile(r"\{([^{}]*)\}")
_TOKEN_RE: Final = re.compile(_TOKEN)


def _check_attribute_name(name: str) -> str:
    """An attribute name: non-empty; braces only around column-name-like placeholders."""
    if not name:
        raise ValueError("attribute name is empty")
    for column in _PLACEHOLDER.findall(name):
        if not _TOKEN_RE.fullmatch(column):
            raise ValueError(f"placeholder {{{column}}} is not a column name")
    if set("{}") & set(_PLACEHOLDER.sub("", name)):
        raise ValueError("unbalanced '{' or '}' (placeholders look like {column})")
    return name


_TABLE_KEY: Final = re.compile(r"[A-Za-z0-9_.-]+:[^\s.:]+\.[^\s.:]+")


def _check_table_key(key: str) -> str:
    if not _TABLE_KEY.fullmatch(key):
        raise ValueError("a table key looks like <source>:<schema-or-database>.<table>")
    return key


Name = Annotated[str, StringConstraints(pattern=rf"^{_TOKEN}$")]
Column = Annotated[str, StringConstraints(min_length=1)]
SourceName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]+$")]
TableKey = Annotated[str, AfterValidator(_check_table_key)]
AttributeName = Annotated[str, AfterValidator(_check_attribute_name)]


# --- the `mapping:` section -------------------------------------------------------------------


class _Spec(BaseModel):
    """Strict about keys (a typo fails at start) and immutable once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class _ColumnSpec(_Spec):
    """A spec that reads one column; a bare string is shorthand for `{column: <string>}`."""

    column: Column

    @model_validator(mode="before")
    @classmethod
    def _from_column_name(cls, data: Any) -> Any:
        return {"column": data} if isinstance(data, str) else data


class IdentifierSpec(_ColumnSpec):
    """The column holding one identifier type, and how to normalise its value."""

    normalize: Normalizer = "none"


class AttributeSpec(_ColumnSpec):
    """The column holding one attribute, its type, and (strings only) its normaliser."""

    type: AttributeType = "string"
    normalize: Normalizer = "none"
    epoch_unit: EpochUnit = "us"

    @model_validator(mode="after")
    def _options_fit_type(self) -> AttributeSpec:
        if self.normalize != "none" and self.type != "string":
            raise ValueError("normalize applies to string attributes only")
        if "epoch_unit" in self.model_fields_set and self.type != "datetime":
            raise ValueError("epoch_unit applies to datetime attributes only")
        return self


class OwnerSpec(_Spec):
    """A reference to the row's owner: a person's identifier, or an entity (its kind).

    `{identifier: user_id, column: user_id}`: the person whose user_id is the column's value.
    `{entity: cart, column: cart_id}`: whoever owns the cart whose id is the column's value.
    """

    column: Column
    identifier: Name | None = None
    entity: Name | None = None
    normalize: Normalizer = "none"

    @model_validator(mode="after")
    def _one_target(self) -> OwnerSpec:
        if (self.identifier is None) == (self.entity is None):
            raise ValueError("an owner names either an identifier type or an entity kind")
        if self.entity is not None and self.normalize != "none":
            raise ValueError("normalize applies to identifier owners only")
        return self


class EntitySpec(_Spec):
    """The row is an entity the person owns; `columns` None keeps every column."""

    kind: Name
    id: Column
    columns: list[Column] | None = None

    @model_validator(mode="before")
    @classmethod
    def _parent_moved(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "parent" in data:
            raise ValueError("entity.parent is now the table's owner: "
                             "owner: {entity: <parent kind>, column: <parent id column>}")
        return data

    @field_validator("columns")
    @classmethod
    def _columns_unique(cls, columns: list[str] | None) -> list[str] | None:
        if columns is not None and len(set(columns)) != len(columns):
            raise ValueError("a column is listed twice")
        return columns


class TableMapping(_Spec):
    """How one table's rows become identifiers (or an owner), attributes and an entity."""

    identifiers: dict[Name, IdentifierSpec] = {}
    owner: OwnerSpec | None = None
    attributes: dict[AttributeName, AttributeSpec] = {}
    entity: EntitySpec | None = None

    @model_validator(mode="after")
    def _identified_or_owned(self) -> TableMapping:
        if self.identifiers and self.owner is not None:
            raise ValueError("a table has either identifiers (its rows are people) "
                             "or an owner (its rows belong to someone), not both")
        if not self.identifiers and self.owner is None and (self.entity is None or self.attributes):
            raise ValueError("a table has identifiers (its rows are people), an owner (its rows "
                             "belong to someone), or only an entity (a catalogue, such as products)")
        if self.owner is not None and self.owner.entity is not None and self.attributes:
            raise ValueError("a row owned through an entity supplies no attributes "
                             "(own it by an identifier instead)")
        return self


class SourceSpec(_Spec):
    """Per source: the priority that breaks ties between equal commit times and positions."""

    # 0..0xFFFF: Version.key() writes it as four hex digits, whose text order must be its order
    priority: int = Field(default=0, ge=0, le=0xFFFF)
    # The table Debezium's heartbeat.action.query writes (`schema.table`, `database.table`):
    # its commit times say how far the source has come when its other tables are quiet.
    heartbeat_table: Annotated[str, StringConstraints(pattern=r"^[^\s.:]+\.[^\s.:]+$")] | None = None


class AggregateSpec(_Spec):
    """A value the store computes from a person's entities of one kind."""

    entity: Name
    function: AggregateFunction
    field: Column | None = None
    where: dict[Column, Annotated[list[JsonScalar], Field(min_length=1)]] | None = None

    @model_validator(mode="after")
    def _field_fits_function(self) -> AggregateSpec:
        if self.function == "count" and self.field is not None:
            raise ValueError("count takes no field")
        if self.function != "count" and self.field is None:
            raise ValueError(f"{self.function} needs a field")
        return self


class MappingConfig(_Spec):
    """The `mapping:` section of the configuration file."""

    unmapped: Literal["dead_letter", "ignore"] = "dead_letter"
    ignore: frozenset[TableKey] = frozenset()
    sources: dict[SourceName, SourceSpec] = {}
    tables: dict[TableKey, TableMapping] = {}
    aggregates: dict[Name, AggregateSpec] = {}
    _parent_kinds: frozenset[str] = PrivateAttr(default=frozenset())
    _heartbeat_tables: frozenset[tuple[str, str]] = PrivateAttr(default=frozenset())

    def model_post_init(self, context: Any) -> None:
        # Entity kinds other rows are owned through (a cart, for its items): worked out once.
        self._parent_kinds = frozenset(t.owner.entity for t in self.tables.values()
                                       if t.owner is not None and t.owner.entity is not None)
        self._heartbeat_tables = frozenset((name, spec.heartbeat_table) for name, spec in self.sources.items()
                                           if spec.heartbeat_table is not None)

    def is_heartbeat(self, event: ChangeEvent) -> bool:
        """Whether the event is a write to its source's heartbeat table."""
        return (event.source, event.qualified_table) in self._heartbeat_tables

    def is_parent_kind(self, kind: str) -> bool:
        return kind in self._parent_kinds

    @field_validator("tables")
    @classmethod
    def _tables_consistent(
        cls, tables: dict[str, TableMapping], info: ValidationInfo
    ) -> dict[str, TableMapping]:
        both = sorted(tables.keys() & info.data.get("ignore", frozenset()))
        if both:
            raise ValueError(f"{', '.join(both)}: listed in both tables and ignore")
        beats = sorted(tables.keys() & {f"{name}:{spec.heartbeat_table}"
                                        for name, spec in info.data.get("sources", {}).items()
                                        if spec.heartbeat_table is not None})
        if beats:
            raise ValueError(f"{', '.join(beats)}: a source's heartbeat_table is not mapped")
        kinds = _entity_kinds(tables)
        for key, table in tables.items():
            owner = table.owner.entity if table.owner else None
            if owner is not None and owner not in kinds:
                raise ValueError(f"{key}: owner.entity {owner!r} is no table's entity kind")
        return tables

    @field_validator("aggregates")
    @classmethod
    def _aggregates_consistent(
        cls, aggregates: dict[str, AggregateSpec], info: ValidationInfo
    ) -> dict[str, AggregateSpec]:
        tables = info.data.get("tables")
        if tables is None:  # tables failed validation; their errors are reported already
            return aggregates
        for name, aggregate in aggregates.items():
            _check_aggregate(name, aggregate, tables)
        return aggregates


def _entity_kinds(tables: Mapping[str, TableMapping]) -> dict[str, list[EntitySpec]]:
    """Entity specs by kind, over all tables."""
    kinds: dict[str, list[EntitySpec]] = {}
    for table in tables.values():
        if table.entity is not None:
            kinds.setdefault(table.entity.kind, []).append(table.entity)
    return kinds


def _check_aggregate(name: str, aggregate: AggregateSpec, tables: Mapping[str, TableMapping]) -> None:
    """An aggregate must read an entity kind that exists, columns it keeps, and own its name."""
    entities = _entity_kinds(tables).get(aggregate.entity)
    if not entities:
        raise ValueError(f"{name}: entity {aggregate.entity!r} is no table's entity kind")
    _check_aggregate_columns(name, aggregate, entities)
    for table in tables.values():
        for attribute in table.attributes:
            if _template_pattern(attribute).fullmatch(name):
                raise ValueError(f"{name}: the name is also an attribute ({attribute!r})")


def _check_aggregate_columns(name: str, aggregate: AggregateSpec, entities: list[EntitySpec]) -> None:
    """When every entity of the kind lists its columns, the aggregate must read listed ones."""
    if any(entity.columns is None for entity in entities):
        return
    kept = set().union(*({*(entity.columns or ()), entity.id} for entity in entities))
    needed = set(aggregate.where or ()) | ({aggregate.field} if aggregate.field else set())
    missing = sorted(needed - kept)
    if missing:
        raise ValueError(f"{name}: entity {aggregate.entity!r} keeps no column {', '.join(missing)}")


def _template_pattern(template: str) -> re.Pattern[str]:
    """A regex matching every name the attribute template can resolve to."""
    parts = _PLACEHOLDER.split(template)  # literal, column, literal, column, ...
    return re.compile("".join(".+" if i % 2 else re.escape(part) for i, part in enumerate(parts)))


# --- mapping one event ------------------------------------------------------------------------


def table_key(event: ChangeEvent) -> str:
    """The event's table as the mapping names it: `<source>:<schema-or-database>.<table>`."""
    return f"{event.source}:{event.qualified_table}"


def map_event(event: ChangeEvent, mapping: MappingConfig) -> RowChange | None:
    """Turn one change event into what it says about its source row.

    In: a decoded ChangeEvent and the validated mapping section.
    Out: a RowChange, or None for a table listed in `ignore` (or any unlisted table when
    `unmapped` is `ignore`).
    Raises MappingError (a PoisonError: dead-letter the record) for an unmapped table, a
    truncate, a row without any identifier, or a value its column's type cannot hold.
    """
    key = table_key(event)
    table = _table_mapping(key, mapping)
    if table is None:
        return None
    if event.op is Op.TRUNCATE:
        raise MappingError(
            f"truncate of {key} is not applied: it names no rows, so no profile can be updated; "
            "re-snapshot the table if its profiles must change"
        )
    row_key = _row_key(event, key)
    version = _version(event, mapping, row_key)
    if event.op is Op.DELETE:
        change = _map_delete(event, key, row_key, table, version)
    else:
        change = _map_upsert(event, key, row_key, table, version)
    if change.entity is not None and mapping.is_parent_kind(change.entity.kind):
        change = dataclasses.replace(change, entity=change.entity._replace(has_children=True))
    return change


def _table_mapping(key: str, mapping: MappingConfig) -> TableMapping | None:
    """The table's mapping; None when it is ignored; MappingError when it is unmapped."""
    if key in mapping.ignore:
        return None
    table = mapping.tables.get(key)
    if table is None and mapping.unmapped == "dead_letter":
        raise MappingError(f"unmapped table {key}: add it to mapping.tables or mapping.ignore")
    return table


def _row_key(event: ChangeEvent, key: str) -> str:
    """The source row's identity: its Kafka key's columns as canonical JSON text."""
    if not event.key:
        raise MappingError(f"{key}: the record has no row key (a table without a primary key?)")
    try:
        return json.dumps(_json_ready(event.key), sort_keys=True, separators=(",", ":"))
    except _CONVERSION_ERRORS:
        raise MappingError(f"{key}: the row key has no JSON form") from None


def _version(event: ChangeEvent, mapping: MappingConfig, row_key: str) -> Version:
    """The event's version: commit time, the source's configured priority, then its position."""
    source = mapping.sources.get(event.source)
    priority = source.priority if source is not None else 0
    # Every row of a snapshot shares one commit time and position; the row's own key tells two
    # rows apart (no hash: two keys never tie), so two rows setting one field resolve the same
    # way in any order.
    tiebreak = f"{event.qualified_table}|{row_key}" if event.snapshot else ""
    return Version(event.commit_us, priority, event.source, event.position, tiebreak)


class _Absent(Enum):
    """A column the image does not carry (unavailable TOAST, or a partial before image)."""

    ABSENT = "absent"


_ABSENT: Final = _Absent.ABSENT


@dataclass(frozen=True, slots=True)
class _Image:
    """One row image, read column by column; strict images reject columns they lack."""

    table: str
    side: str
    row: Mapping[str, Any]
    unavailable: frozenset[str]
    strict: bool

    def get(self, column: str) -> Any:
        """The column's value, ABSENT if not carried, MappingError if strict and unexplained."""
        if column in self.row:
            return self.row[column]
        if self.strict and column not in self.unavailable:
            raise MappingError(f"{self.table}: column {column!r} is not in the {self.side} image")
        return _ABSENT


def _after_image(event: ChangeEvent, key: str) -> _Image:
    if event.after is None:
        raise MappingError(f"{key}: op {event.op.value!r} has no after image")
    return _Image(key, "after", event.after, event.unavailable, strict=True)


def _before_image(event: ChangeEvent, key: str) -> _Image | None:
    if event.before is None:
        return None
    return _Image(key, "before", event.before, event.unavailable, strict=False)


def _map_upsert(event: ChangeEvent, key: str, row_key: str, table: TableMapping,
                version: Version) -> RowChange:
    """Create, snapshot read or update: the after image is the row's new state."""
    after = _after_image(event, key)
    claims = tuple(_identifier_values(after, table).items())
    if table.identifiers and not claims:
        raise _no_identifier(key, table)
    before = _before_image(event, key) if event.op is Op.UPDATE else None
    attributes = _attributes(after, table)
    entity = None
    if table.entity is not None:
        entity = _entity_change(after, event.key, table.entity, _entity_data(after, table.entity))
    return RowChange(
        ref=event.ref, table=key, row_key=row_key, version=version, deleted=False,
        tracked=_tracked(table), identifiers=claims,
        owner=_owner(after, table),
        attributes=attributes,
        before=_before_attributes(before, after, attributes, table) if before is not None else None,
        partial=_partial(event, table),
        entity=entity,
    )


def _map_delete(event: ChangeEvent, key: str, row_key: str, table: TableMapping,
                version: Version) -> RowChange:
    """Delete: the row withdraws everything it supplied; the store knows what that was, so a
    key-only before image (replica identity DEFAULT) is enough."""
    entity = None
    if table.entity is not None:
        image = _before_image(event, key) or _Image(key, "before", {}, frozenset(), strict=False)
        entity = _entity_change(image, event.key, table.entity, None)
    return RowChange(ref=event.ref, table=key, row_key=row_key, version=version, deleted=True,
                     tracked=_tracked(table), entity=entity)


def _tracked(table: TableMapping) -> bool:
    """Whether the store keeps the row's own state: rows that only carry an entity (an order,
    a cart item) are their entity's state, which the store keeps anyway."""
    return bool(table.identifiers or table.attributes or table.entity is None)


# --- identifiers and owners -------------------------------------------------------------------


def _no_identifier(key: str, table: TableMapping) -> MappingError:
    columns = ", ".join(sorted({spec.column for spec in table.identifiers.values()}))
    return MappingError(f"{key}: no identifier in the row: columns {columns} are all null, empty or missing")


def _identifier_values(image: _Image, table: TableMapping) -> dict[str, str]:
    """Identifier type -> normalised value, for each identifier the image carries."""
    values: dict[str, str] = {}
    for type_, spec in table.identifiers.items():
        raw = image.get(spec.column)
        if raw is None or raw is _ABSENT:
            continue
        value = normalize(_key_text(raw, image.table, spec.column), spec.normalize)
        if value:  # empty after normalisation counts as absent
            values[type_] = value
    return values


def _owner(image: _Image, table: TableMapping) -> Reference | None:
    """The row's owner reference; None when the table has none or the column is null
    (a guest order: the row is kept, attached to nobody)."""
    spec = table.owner
    if spec is None:
        return None
    raw = image.get(spec.column)
    if raw is None or raw is _ABSENT:
        return None
    value = normalize(_key_text(raw, image.table, spec.column), spec.normalize)
    if not value:
        return None
    if spec.identifier is not None:
        return Reference("identifier", spec.identifier, value)
    assert spec.entity is not None  # OwnerSpec names one of the two
    return Reference("entity", spec.entity, value)


def _key_text(raw: Any, table: str, column: str) -> str:
    """An identifier or id value as text: strings as they are, integers in decimal."""
    if isinstance(raw, str):
        return raw
    if is_json_int(raw):
        return str(raw)
    raise MappingError(f"{table}: column {column!r} is not text or an integer")


def normalize(text: str, normalizer: Normalizer) -> str:
    """Apply a normaliser: email (strip, lower-case), lower, strip, phone (+ and digits), none."""
    if normalizer == "email":
        return text.strip().lower()
    if normalizer == "lower":
        return text.lower()
    if normalizer == "strip":
        return text.strip()
    if normalizer == "phone":
        digits = "".join(c for c in text if "0" <= c <= "9")
        return ("+" + digits if text.lstrip().startswith("+") else digits) if digits else ""
    return text


# --- attributes -------------------------------------------------------------------------------


def _attributes(image: _Image, table: TableMapping) -> dict[str, Any]:
    """Attribute name (templates resolved) -> JSON-ready value, for each column the image carries."""
    attributes: dict[str, Any] = {}
    for template, spec in table.attributes.items():
        raw = image.get(spec.column)
        name = _attribute_name(template, image)
        if raw is _ABSENT or name is None:
            continue
        if name in attributes:
            raise MappingError(f"{image.table}: two attributes resolve to one name (from {template!r})")
        attributes[name] = _convert(raw, spec, image.table)
    return attributes


def _before_attributes(before: _Image, after: _Image, attributes: Mapping[str, Any],
                       table: TableMapping) -> dict[str, Any]:
    """The attributes the before image carries (a key-only image carries none); a value the
    mapping cannot convert counts as not carried: the store's own record is used instead.
    A column the update left as it was is not converted twice: its after value stands."""
    values: dict[str, Any] = {}
    for template, spec in table.attributes.items():
        raw = before.get(spec.column)
        if raw is _ABSENT:
            continue
        if _PLACEHOLDER.search(template) is None and template in attributes \
                and _same_raw(raw, after.row.get(spec.column, _ABSENT)):
            values[template] = attributes[template]
            continue
        try:
            name = _attribute_name(template, before)
            if name is not None:
                values[name] = _convert(raw, spec, before.table)
        except MappingError:
            continue
    return values


def _same_raw(a: Any, b: Any) -> bool:
    """The same decoded column value, types included at every depth (1, true and 1.0 differ)."""
    try:
        return same_json(a, b)
    except ArithmeticError:  # a signalling NaN compares by raising
        return False


def _partial(event: ChangeEvent, table: TableMapping) -> bool:
    """True when an attribute's column (or a column its name is made of) was not sent."""
    if not event.unavailable:
        return False
    for template, spec in table.attributes.items():
        if spec.column in event.unavailable or set(_PLACEHOLDER.findall(template)) & event.unavailable:
            return True
    return False


def _attribute_name(template: str, image: _Image) -> str | None:
    """The template with each {column} filled from the image; None if a column is not carried.

    A null is an error in the after image, and "not carried" in a (possibly partial) before image.
    """
    values: dict[str, str] = {}
    for column in _PLACEHOLDER.findall(template):
        raw = image.get(column)
        if raw is _ABSENT or (raw is None and not image.strict):
            return None
        if raw is None:
            raise MappingError(
                f"{image.table}: attribute {template!r} needs column {column!r}, which is null"
            )
        values[column] = _key_text(raw, image.table, column)
    name = _PLACEHOLDER.sub(lambda match: values[match.group(1)], template)
    if not name:
        raise MappingError(f"{image.table}: attribute {template!r} resolves to an empty name")
    return name


# --- entities ---------------------------------------------------------------------------------


def _entity_change(
    image: _Image, key: Mapping[str, Any], spec: EntitySpec, data: dict[str, Any] | None
) -> EntityChange:
    """The entity's id (from the image, else the record key) with its new data."""
    raw = image.get(spec.id)
    if raw is None or raw is _ABSENT:
        raw = key.get(spec.id)
    if raw is None:
        raise MappingError(f"{image.table}: entity id column {spec.id!r} is null or missing")
    return EntityChange(spec.kind, _key_text(raw, image.table, spec.id), data)


def _entity_data(image: _Image, spec: EntitySpec) -> dict[str, Any]:
    """The selected columns as JSON-ready values; unavailable columns are left out."""
    columns = spec.columns if spec.columns is not None else list(image.row)
    data: dict[str, Any] = {}
    for column in columns:
        raw = image.get(column)
        if raw is _ABSENT:
            continue
        try:
            data[column] = _json_ready(raw)
        except _CONVERSION_ERRORS:
            raise MappingError(f"{image.table}: column {column!r} has no JSON form") from None
    return data


# --- values -----------------------------------------------------------------------------------


_CONVERSION_ERRORS: Final = (ValueError, TypeError, ArithmeticError, RecursionError)
_EPOCH_UNIT_US: Final[Mapping[str, int]] = {"us": 1, "ms": 1000}
_INTEGER_TEXT: Final = re.compile(r"\s*[+-]?[0-9]+\s*")
# Postgres numeric's limits; beyond them a decimal text is no column value, and could be huge
_DECIMAL_MAX_INTEGER_DIGITS: Final = 131072
_DECIMAL_MAX_SCALE: Final = 16383


def _convert(raw: Any, spec: AttributeSpec, table: str) -> Any:
    """Convert one column value to the attribute's type, or a MappingError naming both."""
    if raw is None:
        return None
    try:
        if spec.type == "datetime":
            return _to_datetime(raw, spec.epoch_unit)
        if spec.type == "string":
            return normalize(_to_string(raw), spec.normalize)
        return _CONVERTERS[spec.type](raw)
    except _Unwritable as exc:
        raise MappingError(f"{table}: column {spec.column!r} holds {exc}") from None
    except _CONVERSION_ERRORS:
        # from None: the cause's message may quote the value, which may be PII
        raise MappingError(f"{table}: column {spec.column!r} is not a valid {spec.type} value") from None


def _to_string(value: Any) -> str:
    if isinstance(value, str):
        return value
    if is_json_int(value):
        return str(value)
    if isinstance(value, Decimal):
        return _decimal_text(value)
    raise TypeError("not text")


def _to_integer(value: Any) -> int:
    if is_json_int(value):
        return _json_int(int(value))
    if isinstance(value, str) and _INTEGER_TEXT.fullmatch(value):
        return _json_int(int(value))
    if isinstance(value, float | Decimal):
        whole = int(value)
        if whole != value:
            raise ValueError("not a whole number")
        return _json_int(whole)
    raise TypeError("not an integer")


def _to_number(value: Any) -> int | float:
    if is_json_int(value):
        return _json_int(int(value))
    if isinstance(value, float | Decimal | str):
        return _finite(float(value))
    raise TypeError("not a number")


def _to_decimal(value: Any) -> str:
    if isinstance(value, float):
        value = repr(_finite(value))
    if is_json_int(value) or isinstance(value, str | Decimal):
        return _decimal_text(Decimal(value))
    raise TypeError("not a decimal")


def _to_boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if is_json_int(value) and value in (0, 1):  # MariaDB TINYINT(1)
        return bool(value)
    raise TypeError("not a boolean")


def _to_date(value: Any) -> str:
    if isinstance(value, datetime):
        raise TypeError("a timestamp, not a date")
    if isinstance(value, date):
        return value.isoformat()
    if is_json_int(value):  # days since the epoch, as Debezium sends a date without schemas
        return (EPOCH_DATE + timedelta(days=value)).isoformat()
    if isinstance(value, str):
        return date.fromisoformat(value).isoformat()
    raise TypeError("not a date")


def _to_datetime(value: Any, unit: EpochUnit) -> str:
    if isinstance(value, datetime):
        return _datetime_text(value)
    if is_json_int(value):
        return _datetime_text(EPOCH + timedelta(microseconds=value * _EPOCH_UNIT_US[unit]))
    if isinstance(value, str):
        return _datetime_text(datetime.fromisoformat(value))
    raise TypeError("not a datetime")


def _to_json(value: Any) -> Any:
    if isinstance(value, str):  # a JSON column's text, as MariaDB JSON columns arrive
        value = json.loads(value, parse_constant=_reject_constant)
        # Python's parser takes escapes of lone surrogates ("\ud800"), which no UTF-8 text holds
        json.dumps(value, ensure_ascii=False).encode()
    return _json_ready(value)


_CONVERTERS: Final[Mapping[str, Callable[[Any], Any]]] = {
    "integer": _to_integer,
    "number": _to_number,
    "decimal": _to_decimal,
    "boolean": _to_boolean,
    "date": _to_date,
    "json": _to_json,
}


def _reject_constant(constant: str) -> Any:
    raise ValueError("NaN and Infinity are not JSON")


def _finite(number: float) -> float:
    if not math.isfinite(number):
        raise ValueError("not a finite number")
    return number


def _decimal_text(number: Decimal) -> str:
    """A finite decimal in plain notation, every digit kept."""
    exponent = number.as_tuple().exponent
    if not isinstance(exponent, int):  # 'n', 'N' or 'F': NaN or Infinity
        raise ValueError("not a finite decimal")
    if number.adjusted() >= _DECIMAL_MAX_INTEGER_DIGITS or -exponent > _DECIMAL_MAX_SCALE:
        raise ValueError("decimal out of range")
    return format(number, "f")


def _datetime_text(value: datetime) -> str:
    """UTC, microseconds always, trailing Z; a naive datetime is taken to be UTC."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(timespec="microseconds") + "Z"


_TEXT_FORMS: Final[tuple[tuple[type, Callable[[Any], str]], ...]] = (
    (datetime, _datetime_text),
    (date, date.isoformat),
    (time, time.isoformat),
    (Decimal, _decimal_text),
)


# What the store's JSON serialiser (and Postgres jsonb, exactly) takes: a wider integer
# passes Python's json but fails the store's serialiser at write time.
_JSON_INT_MIN: Final = -(2**63)
_JSON_INT_MAX: Final = 2**64 - 1


class _Unwritable(ValueError):
    """A value the store cannot write; the message is ours (no value in it), so it is shown."""


def _json_int(value: int) -> int:
    if not _JSON_INT_MIN <= value <= _JSON_INT_MAX:
        raise _Unwritable("an integer wider than 64 bits, which the store cannot write")
    return value


# The store's serialiser refuses documents nested deeper than 255, and wraps a value in a few
# levels of its own (a batch, a row, an attribute's value and version).
_JSON_MAX_DEPTH: Final = 200


def _json_ready(value: Any, depth: int = 0) -> Any:
    """A value as JSON-ready data: decimals and temporal values become text."""
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, int):
        return _json_int(value)
    if isinstance(value, float):
        return _finite(value)
    if depth >= _JSON_MAX_DEPTH and isinstance(value, list | tuple | Mapping):
        raise _Unwritable(f"nested deeper than {_JSON_MAX_DEPTH} levels, which the store cannot write")
    if isinstance(value, list | tuple):
        return [_json_ready(item, depth + 1) for item in value]
    if isinstance(value, Mapping):
        return {_json_key(k): _json_ready(v, depth + 1) for k, v in value.items()}
    for kind, text in _TEXT_FORMS:
        if isinstance(value, kind):
            return text(value)
    raise TypeError("no JSON form")


def _json_key(key: Any) -> str:
    if not isinstance(key, str):
        raise TypeError("JSON object keys are strings")
    return key
