"""A profile's attributes, decided from what its live source rows supply.

Each attribute holds the value of its most recent real change among the live rows that
supply it (the larger version wins). The store keeps the winner with the row that supplied
it, so most batches decide in memory: a new supply wins if newer; only when the winning row
withdraws its value (deleted, set to NULL, moved to another person) must the other rows be
asked again (`recompute`). Plain functions over plain data.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from cdc_sync.core.events import RecordRef
from cdc_sync.core.rows import RowId, RowState, row_tag, same_json

FieldKey = tuple[int, str]  # (profile id, attribute name)


class FieldValue(NamedTuple):
    """A profile attribute as stored: a value, or a tombstone (no live row supplies it).

    A value's version is its last change; a tombstone's is `withdrawn`, the latest version at
    which a row withdrew a value of it (kept on values too, so that it is the same whichever
    row withdrew first).
    """

    value: Any
    deleted: bool
    version: str
    supplier: str | None  # row_tag of the row that supplied it; None for tombstones, restores
    withdrawn: str = ""


class FieldChange(NamedTuple):
    """One applied change, for the history: `old` is None when the field did not exist."""

    profile_id: int
    name: str
    old: FieldValue | None
    new: FieldValue
    ref: RecordRef | None
    at: str = ""  # version of the event that caused it (a delete, for a fallback): its time is the change's


def same_field(a: FieldValue | None, b: FieldValue) -> bool:
    """The same value (or both tombstones): a change of version or supplier only is no change."""
    return a is not None and a.deleted == b.deleted and same_json(a.value, b.value)


def _wins(a: FieldValue, b: FieldValue | None) -> bool:
    """A value beats a tombstone whatever their versions (a tombstone is no live supply);
    otherwise the larger version wins."""
    if b is None:
        return True
    if a.deleted != b.deleted:
        return b.deleted
    return _rank(a) > _rank(b)


def fold_merge(survivor: Mapping[str, FieldValue], loser: Mapping[str, FieldValue]) -> dict[str, FieldValue]:
    """The survivor's attributes after a merge: per name the winner of the two profiles'
    (each already the newest supply of its own rows), so a merge needs no row reads."""
    out = dict(survivor)
    for name, value in loser.items():
        mine = out.get(name)
        won = value if _wins(value, mine) else mine
        assert won is not None
        withdrawn = max(value.withdrawn, mine.withdrawn if mine is not None else "")
        out[name] = won._replace(withdrawn=withdrawn, version=withdrawn) if won.deleted \
            else won._replace(withdrawn=withdrawn)
    return out


@dataclass
class FieldWork:
    """What the batch's row changes mean for the attributes they touch."""

    candidates: dict[FieldKey, list[tuple[FieldValue, RecordRef | None]]] = field(
        default_factory=lambda: defaultdict(list))
    withdrawn: Mapping[FieldKey, tuple[str, RecordRef | None]] = field(default_factory=dict)
    changed: set[tuple[str, FieldKey]] = field(default_factory=set)  # (row tag, key): new supply, withdrawal
    at: dict[str, str] = field(default_factory=dict)  # row tag -> version of its last event in the batch

    def attributes(self) -> set[FieldKey]:
        return set(self.candidates) | set(self.withdrawn)


class RowTransition(NamedTuple):
    """A row before and after the batch, with the person it belonged to and belongs to
    (merges followed)."""

    row: RowId
    before: RowState | None
    before_profile: int | None
    after: RowState
    after_profile: int | None
    ref: RecordRef | None


def field_work(transitions: Iterable[RowTransition],
               withdrawn: Mapping[FieldKey, tuple[str, RecordRef | None]],
               withdrawn_by: Iterable[tuple[str, FieldKey]] = (),
               real: Callable[[int], int] = int) -> FieldWork:
    """What the rows the batch changed supply anew (a changed value, or a row that came to the
    person), and what they withdrew (`withdrawn`: the version of the latest event that did,
    `withdrawn_by`: which row); `real` maps a profile id of the plan to the store's. A supply
    that did not change cannot change an attribute, so it is left out."""
    work = FieldWork(withdrawn=withdrawn, changed=set(withdrawn_by))
    for t in transitions:
        if t.after_profile is None or not t.after.live or not t.after.attrs:
            continue
        pid = real(t.after_profile)
        before = t.before
        stayed = before is not None and before.live and t.before_profile is not None \
            and real(t.before_profile) == pid
        old = before.attrs if stayed and before is not None else {}
        tag = row_tag(t.row)
        work.at[tag] = t.after.version
        for name, supply in t.after.attrs.items():
            prev = old.get(name)
            if prev is not None and prev[1] == supply[1] and same_json(prev[0], supply[0]):
                continue
            key = (pid, name)
            work.candidates[key].append((FieldValue(supply[0], False, supply[1], tag), t.ref))
            work.changed.add((tag, key))
    return work


@dataclass
class FieldDecision:
    """Attributes decided in memory, and those whose winner left (ask the rows again)."""

    final: dict[FieldKey, FieldValue]
    changes: list[FieldChange]
    recompute: dict[FieldKey, tuple[FieldValue, str, RecordRef | None]]  # current, withdrawal version, ref
    cause: dict[FieldKey, str] = field(default_factory=dict)  # of those: the version of the causing event


def _rank(value: FieldValue) -> tuple[str, str]:
    """Larger wins: the version, then (only between values of unknown change time) the row."""
    return (value.version, value.supplier or "")


def decide_fields(current: Mapping[FieldKey, FieldValue], work: FieldWork) -> FieldDecision:
    """Each touched attribute's new state: the newest supply, unless the row that supplied the
    current value no longer does and no new supply is newer than it (then: recompute)."""
    decision = FieldDecision({}, [], {})
    for key in work.attributes():
        cur = current.get(key)
        offers = work.candidates.get(key, [])
        best, ref = max(offers, key=lambda o: _rank(o[0])) if offers else (None, None)
        out, out_ref = work.withdrawn.get(key, ("", None))
        withdrawn = max(out, cur.withdrawn if cur is not None else "")
        if cur is not None and not cur.deleted:
            still = (cur.supplier or "", key) not in work.changed or any(
                o.supplier == cur.supplier and o.version == cur.version for o, _ in offers)
            if still:
                if best is None or _rank(best) <= _rank(cur):
                    best, ref = cur, None
            elif best is None or _rank(best) < _rank(cur):
                decision.recompute[key] = (cur._replace(withdrawn=withdrawn), withdrawn, out_ref)
                # what made the change: the withdrawal, or the winner's own later event
                decision.cause[key] = out or work.at.get(cur.supplier or "", cur.version)
                continue
        if best is not None:
            if best.withdrawn != withdrawn:
                best = best._replace(withdrawn=withdrawn)
            _record(decision, key, cur, best, ref, work.at.get(best.supplier or "", best.version))
        elif withdrawn:  # nothing supplies it: a tombstone of the latest withdrawal
            tombstone = FieldValue(None, True, withdrawn, None, withdrawn)
            _record(decision, key, cur, tombstone, out_ref, withdrawn)
    return decision


def finish_recompute(decision: FieldDecision, winners: Mapping[FieldKey, tuple[FieldValue, RecordRef | None]]
                     ) -> None:
    """Settle the recomputed attributes: the newest supply of a live row, else a tombstone
    versioned by the latest withdrawal."""
    for key, (cur, withdrawn, ref) in sorted(decision.recompute.items()):
        won = winners.get(key)
        at = decision.cause.get(key) or withdrawn
        if won is not None:  # a fallback: the withdrawal (or the winner's own event) made the change
            _record(decision, key, cur, won[0]._replace(withdrawn=withdrawn), ref, at)
        else:
            _record(decision, key, cur, FieldValue(None, True, withdrawn, None, withdrawn), ref, at)


def _record(decision: FieldDecision, key: FieldKey, cur: FieldValue | None, new: FieldValue,
            ref: RecordRef | None, at: str) -> None:
    if new == cur:
        return
    decision.final[key] = new
    # A tombstone of a value no batch ever showed (set and withdrawn within one) is no change
    if not same_field(cur, new) and not (cur is None and new.deleted):
        decision.changes.append(FieldChange(key[0], key[1], cur, new, ref, at))
