"""What the map stage hands to reconcile: what one change event says about one source row."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, NamedTuple

from cdc_sync.core.events import RecordRef

# Width of each number in a version key: 16 hex digits hold any 64-bit LSN, offset or time.
_W = 16
_HEX = f"%0{_W}x"
_KEY = f"%0{_W}x/%04x/%s/%s/%s"


@dataclass(frozen=True, slots=True)
class Version:
    """The version of a fact: larger wins, equal is the same fact.

    Ordered by source commit time, then the source's configured priority, then the source
    name, and only then by the position within that source (LSN; binlog file/pos/row): two
    sources' positions are never compared, because the source name decides first. `tiebreak`
    tells apart rows of one snapshot, which share commit time and position (the row's key).
    Versions compare by their key; see `key()`.
    """

    commit_us: int
    priority: int
    source: str
    position: tuple[int, ...]
    tiebreak: str = ""
    _key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Computed once: every field and identifier of a mutation compares by it.
        pos = ".".join([_HEX % p for p in self.position])
        object.__setattr__(self, "_key", _KEY % (self.commit_us, self.priority, self.source, pos,
                                                 self.tiebreak))

    def key(self) -> str:
        """A text key whose byte order is the version order (stored and compared in SQL)."""
        return self._key

    def __lt__(self, other: Version) -> bool:
        return self._key < other._key

    def __le__(self, other: Version) -> bool:
        return self._key <= other._key

    @classmethod
    def from_key(cls, key: str) -> Version:
        commit, priority, source, pos, tiebreak = key.split("/", 4)
        position = tuple(int(p, 16) for p in pos.split(".")) if pos else ()
        return cls(int(commit, 16), int(priority, 16), source, position, tiebreak)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def commit_time(key: str) -> datetime:
    """The source commit time a version key starts with (µs since the epoch, in hex), in UTC;
    cheaper than Version.from_key where nothing else of the key is wanted."""
    return _EPOCH + timedelta(microseconds=int(key[:key.index("/")], 16))


def commit_key(commit_us: int) -> str:
    """The smallest version key of a commit time: every version committed then sorts after it."""
    return _HEX % commit_us


IdentifierKey = tuple[str, str]  # (type, value)
EntityKey = tuple[str, str]  # (kind, entity id)


class Reference(NamedTuple):
    """The row belongs to whoever this points at: a person's identifier (an order's user_id)
    or an entity (a cart item's cart). A reference attaches; it never merges people."""

    to: Literal["identifier", "entity"]
    type: str  # identifier type, or entity kind
    value: str


class EntityChange(NamedTuple):
    """New state of an entity the row is (a cart, a cart item, an order); data None = deleted.

    `data` holds the columns the image carried (unavailable TOAST columns are left out)."""

    kind: str
    entity_id: str
    data: Mapping[str, Any] | None
    has_children: bool = False  # other rows are owned through entities of this kind


@dataclass(frozen=True, slots=True)
class RowChange:
    """Everything one change event says about one source row, at one version.

    `identifiers` are the person identifiers the row claims now (none on delete); `attributes`
    every mapped attribute the after image carries, null included (null: the row supplies
    nothing for it); `before` the same read from the before image, where it carries them.
    `partial` is true when some attribute column was unavailable (unchanged TOAST): attributes
    the row supplied before and this image does not name are then kept, not withdrawn.
    """

    ref: RecordRef
    table: str  # "<source>:<schema-or-database>.<table>", as in the mapping file
    row_key: str  # the source row's key, as canonical JSON text
    version: Version
    deleted: bool
    tracked: bool = True  # False: the row is just its entity; the store keeps no row state
    identifiers: tuple[IdentifierKey, ...] = ()
    owner: Reference | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)
    before: Mapping[str, Any] | None = None
    partial: bool = False
    entity: EntityChange | None = None

    @property
    def row(self) -> tuple[str, str]:
        return (self.table, self.row_key)

    def __reduce__(self) -> tuple[type[RowChange], tuple[Any, ...]]:
        # Pickled by its fields (the prepare worker sends every batch to the daemon): loading
        # is 2.5 times cheaper than through the dataclass's generated __setstate__.
        return (RowChange, (self.ref, self.table, self.row_key, self.version, self.deleted, self.tracked,
                            self.identifiers, self.owner, self.attributes, self.before, self.partial,
                            self.entity))
