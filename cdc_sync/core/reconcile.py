"""Reconcile, the decision part: which person each source row belongs to, and what it says.

The store adapter reads what it holds for the rows, identifiers and entities a batch names
(a `StoreView`); `plan_batch` walks the batch in order and decides every row's new state,
which identifiers it claims or releases, which profiles to create or merge and which
entities move; core.profiles then decides the attributes. Plain functions over plain data.

Identity rules (docs/mapping.md):
- A row's person identifiers link it to a profile. Two profiles merge only when one live row
  claims identifiers of both: an identifier that a row of another table claimed at the same
  time in event time (it claims it now, or released it only after this claim's commit), or one
  that only references have named so far (an order's user_id before the user's row arrived).
- Within one table an identifier belongs to one row: a row claiming an identifier another
  row of its table claims (the release has not arrived yet, or will), or claimed once and
  since released, takes it if its claim is newer, and merges nobody.
- A row with an owner reference belongs to whoever the reference points at, and moves with
  it; it never merges. An entity's children follow it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from cdc_sync.core.events import RecordRef
from cdc_sync.core.mutations import EntityKey, IdentifierKey, Reference, RowChange
from cdc_sync.core.profiles import RowTransition
from cdc_sync.core.rows import RowId, RowState, next_attrs, row_tag, tag_table


class StoredIdentifier(NamedTuple):
    profile_id: int
    claimants: frozenset[str]  # row tags of the live rows claiming it
    version: str  # of its newest claim; NEVER_CLAIMED while only references named it
    released: Mapping[str, str] = {}  # row tag -> version of that row's latest release of it


NEVER_CLAIMED = ""


class EntityState(NamedTuple):
    """An entity as stored; `data` None means deleted (a tombstone that keeps its version)."""

    profile_id: int | None  # None while its owner is unknown (a cart item before its cart)
    parent: EntityKey | None
    data: Mapping[str, Any] | None
    version: str


@dataclass
class StoreView:
    """What the store holds for the keys a batch names."""

    rows: dict[RowId, RowState]
    identifiers: dict[IdentifierKey, StoredIdentifier]
    entities: dict[EntityKey, EntityState]
    born: dict[int, str]  # of every profile the above name
    claimant_profiles: dict[str, int | None] = field(default_factory=dict)  # row tag -> its profile,
    # for the rows that claim (or claimed) the identifiers above


class Merge(NamedTuple):
    """`loser` is the same person as `survivor`: row `proof_row` claims `proof` of the loser."""

    survivor: int
    loser: int
    proof: IdentifierKey
    proof_row: RowId
    version: str = ""  # of the event that proved it


@dataclass
class BatchPlan:
    """The decided batch. New profiles have negative ids until the store gives them real ones."""

    rows: dict[RowId, RowState]  # new state of every row the batch changed
    untracked: set[RowId]  # of those, rows that are just their entity (not stored as rows)
    transitions: list[RowTransition]
    withdrawn: dict[tuple[int, str], tuple[str, RecordRef | None]]  # (profile, name) -> by what
    withdrawn_by: set[tuple[str, tuple[int, str]]]  # (row tag, (profile, name)) each withdrawal
    identifiers: dict[IdentifierKey, StoredIdentifier]  # those that changed
    entities: dict[EntityKey, tuple[EntityState | None, EntityState]]  # changed: (before, after)
    new_profiles: dict[int, str]  # temporary id -> born
    merges: list[Merge]
    born: dict[int, str]  # existing profiles whose born moves earlier
    moved: dict[EntityKey, int | None]  # entities whose owner changed (None: nobody): children follow
    alias: dict[int, int] = field(default_factory=dict)  # merged profile -> its survivor

    def resolve(self, pid: int) -> int:
        return _follow(self.alias, pid) if self.alias else pid


def _follow(alias: Mapping[int, int], pid: int) -> int:
    while pid in alias:
        pid = alias[pid]
    return pid


class _Planner:
    """Walks a batch in order over an overlay of the store view (state needed: the overlay)."""

    def __init__(self, view: StoreView) -> None:
        self.view = view
        self.rows = dict(view.rows)
        self.ids = dict(view.identifiers)
        self.entities = dict(view.entities)
        self.born = dict(view.born)
        self.alias: dict[int, int] = {}
        self.changed_ids: set[IdentifierKey] = set()
        self.changed_entities: set[EntityKey] = set()
        self.refs: dict[RowId, RecordRef] = {}
        self.new_profiles: dict[int, str] = {}
        self.merges: list[Merge] = []
        self.moved: dict[EntityKey, int | None] = {}
        self.withdrawn: dict[tuple[int, str], tuple[str, RecordRef | None]] = {}
        self.withdrawn_by: set[tuple[str, tuple[int, str]]] = set()
        self.untracked: set[RowId] = set()

    def find(self, pid: int | None) -> int | None:
        return None if pid is None else _follow(self.alias, pid)

    def apply(self, change: RowChange) -> None:
        """One event: skipped when the row already has it (redelivery) or something newer."""
        old = self.rows.get(change.row)
        version = change.version.key()
        if old is not None and version <= old.version:
            return
        profile = self._profile_for(change, old)
        if profile is not None:
            self._attach(profile, version)
        self._claims(change, old, profile)
        entity = self._entity(change, profile)
        new = RowState(profile, not change.deleted, version, change.identifiers,
                       change.owner, entity, next_attrs(change, old))
        for key in self._supplies(old) - self._supplies(new) if old is not None else ():
            seen = self.withdrawn.get(key)
            if seen is None or version > seen[0]:
                self.withdrawn[key] = (version, change.ref)
            self.withdrawn_by.add((row_tag(change.row), key))
        self.rows[change.row] = new
        self.refs[change.row] = change.ref
        if not change.tracked:
            self.untracked.add(change.row)

    def _supplies(self, state: RowState | None) -> set[tuple[int, str]]:
        """The (profile, attribute) pairs a row state supplies."""
        if state is None or not state.live or state.profile_id is None:
            return set()
        pid = _follow(self.alias, state.profile_id)
        return {(pid, name) for name in state.attrs}

    # ---- which person

    def _profile_for(self, change: RowChange, old: RowState | None) -> int | None:
        if change.deleted:
            return self.find(old.profile_id) if old is not None else None
        if change.identifiers:
            return self._resolve_claims(change, old)
        if change.owner is not None:
            return self._resolve_owner(change.owner, change.version.key())
        return None

    def _resolve_owner(self, owner: Reference, version: str) -> int | None:
        key = (owner.type, owner.value)
        if owner.to == "entity":
            entity = self.entities.get(key)
            return None if entity is None else self.find(entity.profile_id)
        stored = self.ids.get(key)
        if stored is not None:
            return self.find(stored.profile_id)
        pid = self._new_profile(version)  # the person is referenced before any row claims them
        self.ids[key] = StoredIdentifier(pid, frozenset(), NEVER_CLAIMED)
        self.changed_ids.add(key)
        return pid

    def _resolve_claims(self, change: RowChange, old: RowState | None) -> int:
        """The row's profile: its own, joined with every profile its claims prove the same person."""
        tag, table = row_tag(change.row), change.table
        current = self.find(old.profile_id) if old is not None else None
        joins: list[tuple[int, IdentifierKey]] = []
        claimed = set(old.claims) if old is not None and old.live else set()
        for key in change.identifiers:
            if key in claimed:  # claimed already: whatever it proves was joined back then
                continue
            stored = self.ids.get(key)
            if stored is not None:
                joins += [(pid, key) for pid in self._same_person(stored, tag, table, change.version.key())
                          if pid != current]
        candidates = {pid for pid, _ in joins} | ({current} if current is not None else set())
        if not candidates:
            return self._new_profile(change.version.key())
        survivor = min(candidates, key=lambda p: (self.born[p], p))
        for pid, key in joins:
            if self.find(pid) != survivor:
                self._merge(survivor, self.find(pid) or pid, key, change)
        if current is not None and self.find(current) != survivor:
            self._merge(survivor, current, joins[0][1], change)
        return survivor

    def _same_person(self, stored: StoredIdentifier, tag: str, table: str, version: str) -> set[int]:
        """The profiles a claim at `version` proves the same person: those of the other tables'
        rows claiming the identifier at that time in event time (now, or released after it),
        or the identifier's own while only references named it."""
        if stored.version == NEVER_CLAIMED:
            return {_follow(self.alias, stored.profile_id)}
        rows = [o for o in stored.claimants if o != tag and tag_table(o) != table]
        rows += [o for o, end in stored.released.items() if tag_table(o) != table and end > version]
        holder = _follow(self.alias, stored.profile_id)
        tables = Counter(tag_table(o) for o in rows)
        found = set()
        for other in rows:
            # Two rows of one table claiming it: one has released it (not yet seen) and the
            # other took it; only the identifier's holder is that table's person now.
            pid = holder if tables[tag_table(other)] > 1 else self._profile_of(other)
            if pid is not None:
                found.add(pid)
        return found

    def _profile_of(self, tag: str) -> int | None:
        table, key = tag.split(" ", 1)
        state = self.rows.get((table, key))
        pid = state.profile_id if state is not None else self.view.claimant_profiles.get(tag)
        return self.find(pid)

    def _new_profile(self, version: str) -> int:
        pid = -1 - len(self.new_profiles)
        self.new_profiles[pid] = version
        self.born[pid] = version
        return pid

    def _attach(self, pid: int, version: str) -> None:
        if version < self.born[pid]:
            self.born[pid] = version

    def _merge(self, survivor: int, loser: int, proof: IdentifierKey, change: RowChange) -> None:
        self.alias[loser] = survivor
        self.merges.append(Merge(survivor, loser, proof, change.row, change.version.key()))
        self._attach(survivor, self.born[loser])

    # ---- identifiers

    def _claims(self, change: RowChange, old: RowState | None, profile: int | None) -> None:
        """Release what the row no longer claims; claim (or take) what it claims now."""
        tag, version = row_tag(change.row), change.version.key()
        before = set(old.claims) if old is not None and old.live else set()
        now = set(change.identifiers)
        for key in sorted(before - now):
            stored = self.ids.get(key)
            if stored is None:  # never written (an older store); nothing to release
                continue
            released = {**stored.released, tag: max(stored.released.get(tag, ""), version)}
            self._set_id(key, stored._replace(claimants=stored.claimants - {tag}, released=released))
        if profile is None:
            return
        for key in change.identifiers:
            if key in before:  # claimed already: nothing to write
                continue
            stored = self.ids.get(key)
            if stored is None:
                self._set_id(key, StoredIdentifier(profile, frozenset({tag}), version))
                continue
            pid = _follow(self.alias, stored.profile_id)
            if pid != profile and version > stored.version:  # the newer claim takes it
                pid = profile
            self._set_id(key, stored._replace(profile_id=pid, claimants=stored.claimants | {tag},
                                              version=max(stored.version, version)))

    def _set_id(self, key: IdentifierKey, value: StoredIdentifier) -> None:
        if self.ids.get(key) != value:
            self.ids[key] = value
            self.changed_ids.add(key)

    # ---- entities

    def _entity(self, change: RowChange, profile: int | None) -> EntityKey | None:
        """The row's entity, new state; when its owner changed its children follow."""
        if change.entity is None:
            return None
        key = (change.entity.kind, change.entity.entity_id)
        prev = self.entities.get(key)
        parent = (change.owner.type, change.owner.value) \
            if change.owner is not None and change.owner.to == "entity" else None
        data = change.entity.data
        if change.deleted:
            parent = prev.parent if prev is not None else None
        elif prev is not None and prev.data is not None and data is not None:
            data = {**prev.data, **data}  # columns the image left out (unchanged TOAST) keep their value
        owner_before = self.find(prev.profile_id) if prev is not None else None
        self.entities[key] = EntityState(profile, parent, data, change.version.key())
        self.changed_entities.add(key)
        if owner_before != profile and change.entity.has_children:
            self.moved[key] = profile
        return key

    def plan(self) -> BatchPlan:
        transitions = []
        for row, ref in self.refs.items():
            before, after = self.view.rows.get(row), self.rows[row]
            transitions.append(RowTransition(
                row, before, self.find(before.profile_id) if before is not None else None,
                after, self.find(after.profile_id), ref))
        withdrawn: dict[tuple[int, str], tuple[str, RecordRef | None]] = {}
        for (pid, name), seen in self.withdrawn.items():
            key = (_follow(self.alias, pid), name)
            if key not in withdrawn or seen[0] > withdrawn[key][0]:
                withdrawn[key] = seen
        born = {p: b for p, b in self.born.items() if p >= 0 and b < self.view.born.get(p, b)}
        return BatchPlan(
            rows={row: self.rows[row] for row in self.refs}, untracked=self.untracked,
            transitions=transitions, withdrawn=withdrawn,
            withdrawn_by={(tag, (_follow(self.alias, pid), name)) for tag, (pid, name) in self.withdrawn_by},
            identifiers={k: self.ids[k] for k in self.changed_ids},
            entities={k: (self.view.entities.get(k), self.entities[k]) for k in self.changed_entities},
            new_profiles={p: self.born[p] for p in self.new_profiles},
            merges=self.merges, born=born, moved=self.moved, alias=self.alias)


def plan_batch(changes: Sequence[RowChange], view: StoreView) -> BatchPlan:
    """Decide a batch: every row's new state and what it does to people and entities.

    In: the batch in partition order and what the store holds for the keys it names.
    Out: the plan the store writes (see BatchPlan); the attributes are decided from its
    transitions by core.profiles.
    """
    planner = _Planner(view)
    for change in changes:
        planner.apply(change)
    return planner.plan()


def claim_keys(changes: Sequence[RowChange], view: StoreView) -> set[IdentifierKey]:
    """The identifiers the batch claims anew or releases, not read yet: a claim the row made
    already needs no reading (an update that keeps a row's email, the common case)."""
    times = Counter(c.row for c in changes)
    keys: set[IdentifierKey] = set()
    for c in changes:
        old = view.rows.get(c.row)
        before = set(old.claims) if old is not None and old.live else set()
        now = set(c.identifiers)
        # A row changed several times may release and claim again within the batch.
        keys |= before | now if times[c.row] > 1 else before ^ now
    return keys - view.identifiers.keys()


def claimant_tags(changes: Sequence[RowChange], view: StoreView) -> set[str]:
    """Rows (tags) outside the batch whose profile a new claim of the batch may join: other
    tables' rows that claim, or claimed, an identifier the batch claims anew."""
    rows = {row_tag(c.row) for c in changes}
    changes_of: dict[RowId, int] = {}
    for c in changes:
        changes_of[c.row] = changes_of.get(c.row, 0) + 1
    tags: set[str] = set()
    for c in changes:
        old = view.rows.get(c.row)
        # A row changed once claims anew only what it did not claim; one changed several times
        # may release and claim again within the batch.
        before = set(old.claims) if old is not None and old.live and changes_of[c.row] == 1 else set()
        for key in c.identifiers:
            stored = view.identifiers.get(key)
            if key in before or stored is None:
                continue
            tags.update(t for t in (*stored.claimants, *stored.released)
                        if t not in rows and tag_table(t) != c.table)
    return tags


def entity_rows(changes: Sequence[RowChange], entities: Mapping[EntityKey, EntityState]
                ) -> dict[RowId, RowState]:
    """The state of the batch's untracked rows (those that are just their entity), from it."""
    rows: dict[RowId, RowState] = {}
    for c in changes:
        if not c.tracked and c.entity is not None:
            e = entities.get((c.entity.kind, c.entity.entity_id))
            if e is not None:
                rows[c.row] = RowState(e.profile_id, e.data is not None, e.version, (), None,
                                       (c.entity.kind, c.entity.entity_id), {})
    return rows


def view_keys(changes: Sequence[RowChange]) -> tuple[set[RowId], set[IdentifierKey], set[EntityKey]]:
    """The (tracked) rows, referenced identifiers and entities the store reads first for a
    batch (then, once it knows the rows, the identifiers of claim_keys)."""
    rows: set[RowId] = set()
    ids: set[IdentifierKey] = set()
    entities: set[EntityKey] = set()
    for c in changes:
        if c.tracked:
            rows.add(c.row)
        if c.owner is not None:
            (ids if c.owner.to == "identifier" else entities).add((c.owner.type, c.owner.value))
        if c.entity is not None:
            entities.add((c.entity.kind, c.entity.entity_id))
    return rows, ids, entities
