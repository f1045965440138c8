"""What the map stage hands to reconcile: versioned facts about one person, as plain values."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from cdc_sync.core.events import RecordRef

# Width of each number in a version key: 16 hex digits hold any 64-bit LSN, offset or time.
_W = 16
_HEX = f"%0{_W}x"
_KEY = f"%0{_W}x/%s/%04x/%s"


@dataclass(frozen=True, slots=True, order=True)
class Version:
    """The version of a fact: larger wins, equal is the same fact.

    Ordered by source commit time, then the position within the source (LSN, binlog
    file/pos/row), then the source's configured priority, then the source name so that
    two sources never produce one version for two different facts.
    """

    commit_us: int
    position: tuple[int, ...]
    priority: int
    source: str
    _key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Computed once: every field and identifier of a mutation compares by it.
        pos = ".".join([_HEX % p for p in self.position])
        object.__setattr__(self, "_key", _KEY % (self.commit_us, pos, self.priority, self.source))

    def key(self) -> str:
        """A text key whose string order is the version order (stored and compared in SQL)."""
        return self._key

    @classmethod
    def from_key(cls, key: str) -> Version:
        commit, pos, priority, source = key.split("/", 3)
        position = tuple(int(p, 16) for p in pos.split(".")) if pos else ()
        return cls(int(commit, 16), position, int(priority, 16), source)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def commit_time(key: str) -> datetime:
    """The source commit time a version key starts with (µs since the epoch, in hex), in UTC;
    cheaper than Version.from_key where nothing else of the key is wanted."""
    return _EPOCH + timedelta(microseconds=int(key[:key.index("/")], 16))


# NamedTuple, not a frozen dataclass: built several times per event (see core/profiles.py).
class IdentifierClaim(NamedTuple):
    """The row says this identifier belongs to its person (live) or no longer does (not live)."""

    type: str
    value: str
    live: bool = True


class EntityChange(NamedTuple):
    """New state of an entity the person owns (a cart, a cart item, an order); data None = deleted."""

    kind: str
    entity_id: str
    data: Mapping[str, Any] | None
    parent: tuple[str, str] | None = None  # (kind, entity_id) of the owning entity, e.g. a cart


@dataclass(frozen=True, slots=True)
class ProfileMutation:
    """Everything one change event says about one person, at one version.

    `attributes` hold JSON-ready values; `deleted` names attributes the event tombstones.
    """

    ref: RecordRef
    table: str  # "<source>:<schema-or-database>.<table>", as in the mapping file
    version: Version
    identifiers: tuple[IdentifierClaim, ...]
    attributes: Mapping[str, Any] = field(default_factory=dict)
    deleted: frozenset[str] = frozenset()
    entity: EntityChange | None = None
