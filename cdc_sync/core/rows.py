"""Source rows: what each live row of a source table currently says, and when it said it.

A profile is what its live rows say about a person, so reconcile keeps one RowState per
source row. Each attribute a row supplies carries the version of the event that last
*changed* it: an update restates unchanged columns, but that is no new fact.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, NamedTuple

from cdc_sync.core.mutations import EntityKey, IdentifierKey, Reference, RowChange

RowId = tuple[str, str]  # (table, row key)
Supply = tuple[Any, str]  # (value, version of the change that set it)

# The version of a value whose change time is unknown (a row first seen in an update whose
# before image shows the value unchanged): older than every real change, so any wins over it.
UNKNOWN_CHANGE: Final = ""


class RowState(NamedTuple):
    """One source row as the store knows it; a deleted row stays as a versioned tombstone."""

    profile_id: int | None  # the person it belongs to; None while its owner is unknown
    live: bool
    version: str  # of the last event applied to the row
    claims: tuple[IdentifierKey, ...]  # person identifiers it claims
    owner: Reference | None
    entity: EntityKey | None
    attrs: Mapping[str, Supply]  # what it supplies: non-null values only


def row_tag(row: RowId) -> str:
    """A row's id as one text (table keys hold no space), as identifiers and fields name it."""
    return f"{row[0]} {row[1]}"


def tag_table(tag: str) -> str:
    return tag[:tag.index(" ")]


def same_json(a: Any, b: Any) -> bool:
    """Equal as JSON values: unlike Python's ==, 1 is not true and 1 is not 1.0 here."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def next_attrs(change: RowChange, old: RowState | None) -> dict[str, Supply]:
    """What the row supplies after `change`, each value with the version of its last change.

    A column is changed when its value differs from the before image's, or, where the before
    image does not carry it (replica identity DEFAULT, TOAST), from what the store last saw
    from this row. A NULL supplies nothing: created so, it asserts nothing; changed to it, the
    row's value is withdrawn. A delete withdraws everything.
    """
    if change.deleted:
        return {}
    previous = old.attrs if old is not None and old.live else {}
    version = change.version.key()
    if not previous and change.before is None:  # a new row: every value is a change
        return {name: (value, version) for name, value in change.attributes.items() if value is not None}
    attrs = dict(previous) if change.partial else {}
    before = change.before
    for name, value in change.attributes.items():
        if value is None:
            attrs.pop(name, None)
            continue
        known = previous.get(name)
        # Not carried by the before image, not supplied by the row as stored: it was null then.
        was = before[name] if before is not None and name in before else known[0] if known else None
        if same_json(was, value):
            kept = known is not None and same_json(known[0], value)
            attrs[name] = (value, known[1] if kept and known is not None else UNKNOWN_CHANGE)
        else:
            attrs[name] = (value, version)
    return attrs
