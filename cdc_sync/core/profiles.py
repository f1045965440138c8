"""Reconcile, the decision part: which profile a change belongs to, and which facts win.

Plain functions over plain data. The store adapter reads the current state for the
keys a batch touches, these functions decide, and the adapter writes the result in
one transaction. Every decision compares versions, so the outcome is the same
whatever the order or number of deliveries.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from cdc_sync.core.events import RecordRef
from cdc_sync.core.mutations import ProfileMutation

IdentifierKey = tuple[str, str]  # (type, value)


@dataclass(frozen=True, slots=True)
class NewProfile:
    """A profile this batch creates; `index` into IdentityPlan.new_profiles."""

    index: int


Target = int | NewProfile


# The small value records built per field and identifier are NamedTuples: immutable like
# frozen dataclasses, and several times cheaper to build on the hot path.
class StoredIdentifier(NamedTuple):
    profile_id: int
    live: bool
    version: str


@dataclass(frozen=True, slots=True)
class Merge:
    """`loser` is the same person as `survivor`, proven by both carrying `proof`."""

    survivor: int
    loser: int
    proof: IdentifierKey


class IdentifierWrite(NamedTuple):
    type: str
    value: str
    target: Target
    live: bool
    version: str


@dataclass
class IdentityPlan:
    """Where each mutation goes, which profiles to create and merge, which identifiers to write."""

    targets: list[Target]
    new_profiles: list[str] = field(default_factory=list)  # born version of each new profile
    merges: list[Merge] = field(default_factory=list)
    identifiers: list[IdentifierWrite] = field(default_factory=list)
    born: dict[int, str] = field(default_factory=dict)  # existing profiles whose born moves earlier


class _Components:
    """Union-find over hashable nodes."""

    def __init__(self) -> None:
        self.parent: dict[object, object] = {}

    def find(self, node: object) -> object:
        self.parent.setdefault(node, node)
        root = node
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[node] != root:  # path compression
            self.parent[node], node = root, self.parent[node]
        return root

    def union(self, a: object, b: object) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[ra] = rb


def resolve_identities(mutations: Sequence[ProfileMutation],
                       known: Mapping[IdentifierKey, StoredIdentifier],
                       born: Mapping[int, str]) -> IdentityPlan:
    """Link each mutation to one profile through its identifiers.

    Every identifier a row ever carried links (live or not), so the grouping is the
    connected components of all claims, independent of order. A group touching several
    existing profiles merges them into the one born first (ties: lowest id).
    In: the batch, the stored identifiers it mentions, and `born` of the profiles they name.
    """
    comps = _Components()
    for i, m in enumerate(mutations):
        for claim in m.identifiers:
            key = (claim.type, claim.value)
            comps.union(("m", i), ("i", key))
            if key in known:
                comps.union(("i", key), ("p", known[key].profile_id))
    groups: dict[object, list[int]] = defaultdict(list)
    for i in range(len(mutations)):
        groups[comps.find(("m", i))].append(i)

    plan = IdentityPlan(targets=[NewProfile(-1)] * len(mutations))
    for members in groups.values():
        _plan_group(plan, mutations, members, known, born)
    return plan


def _plan_group(plan: IdentityPlan, mutations: Sequence[ProfileMutation], members: list[int],
                known: Mapping[IdentifierKey, StoredIdentifier], born: Mapping[int, str]) -> None:
    claims = [(c, mutations[i].version.key()) for i in members for c in mutations[i].identifiers]
    existing = {known[(c.type, c.value)].profile_id for c, _ in claims if (c.type, c.value) in known}
    first_seen = min(v for _, v in claims)
    target: Target
    if existing:
        survivor = min(existing, key=lambda pid: (born[pid], pid))
        target = survivor
        oldest = min([first_seen, *(born[p] for p in existing)])
        if oldest < born[survivor]:
            plan.born[survivor] = oldest
        plan.merges += _merges(survivor, existing - {survivor}, claims, known)
    else:
        target = NewProfile(len(plan.new_profiles))
        plan.new_profiles.append(first_seen)
    for i in members:
        plan.targets[i] = target
    plan.identifiers += _identifier_writes(claims, known, target)


def _merges(survivor: int, losers: set[int], claims: list[tuple[Any, str]],
            known: Mapping[IdentifierKey, StoredIdentifier]) -> list[Merge]:
    """One merge per loser, with an identifier of the batch that links it as the proof."""
    merges = []
    for loser in sorted(losers):
        proof = next(((c.type, c.value) for c, _ in claims
                      if (c.type, c.value) in known and known[(c.type, c.value)].profile_id == loser),
                     ("", ""))
        merges.append(Merge(survivor, loser, proof))
    return merges


def _identifier_writes(claims: list[tuple[Any, str]], known: Mapping[IdentifierKey, StoredIdentifier],
                       target: Target) -> list[IdentifierWrite]:
    """The newest claim per identifier, when it is newer than what is stored (or new)."""
    newest: dict[IdentifierKey, tuple[str, bool]] = {}
    for claim, version in claims:
        key = (claim.type, claim.value)
        if key not in newest or version > newest[key][0]:
            newest[key] = (version, claim.live)
    writes = []
    for (type_, value), (version, live) in sorted(newest.items()):
        stored = known.get((type_, value))
        if stored is None or version > stored.version:
            writes.append(IdentifierWrite(type_, value, target, live, version))
    return writes


# ---------------------------------------------------------------- fields


class FieldValue(NamedTuple):
    """A profile field as stored: its value, whether it is a tombstone, its version."""

    value: Any
    deleted: bool
    version: str


class FieldChange(NamedTuple):
    """One applied change, for the history: `old` is None when the field did not exist."""

    profile_id: int
    name: str
    old: FieldValue | None
    new: FieldValue
    ref: RecordRef | None


FieldKey = tuple[int, str]  # (profile id, field name)
Incoming = tuple[FieldKey, FieldValue, RecordRef | None]


def same_json(a: Any, b: Any) -> bool:
    """Equal as JSON values: unlike Python's ==, 1 is not true and 1 is not 1.0 here."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def field_facts(mutations: Sequence[ProfileMutation], profile_ids: Sequence[int]) -> list[Incoming]:
    """Flatten mutations into (key, value, ref) facts, given the profile each mutation resolved to."""
    facts: list[Incoming] = []
    for m, pid in zip(mutations, profile_ids, strict=True):
        version = m.version.key()
        for name, value in m.attributes.items():
            facts.append(((pid, name), FieldValue(value, False, version), m.ref))
        for name in m.deleted:
            facts.append(((pid, name), FieldValue(None, True, version), m.ref))
    return facts


def reconcile_fields(current: Mapping[FieldKey, FieldValue],
                     incoming: Iterable[Incoming]) -> tuple[dict[FieldKey, FieldValue], list[FieldChange]]:
    """Apply facts in version order on top of the stored values.

    Returns the final value of every key that moved (value or version), and the changes
    whose value differs from the one before (a newer version of the same value moves the
    version, so a late older fact cannot win, but is not a change in the history).
    """
    by_key: dict[FieldKey, list[tuple[FieldValue, RecordRef | None]]] = defaultdict(list)
    for key, value, ref in incoming:
        by_key[key].append((value, ref))
    final: dict[FieldKey, FieldValue] = {}
    changes: list[FieldChange] = []
    for key, facts in by_key.items():
        state = current.get(key)
        ordered = facts if len(facts) == 1 else sorted(facts, key=lambda f: f[0].version)
        for value, ref in ordered:
            if state is not None and value.version <= state.version:
                continue
            if state is None or state.deleted != value.deleted or not same_json(state.value, value.value):
                changes.append(FieldChange(key[0], key[1], state, value, ref))
            state = value
        if state is not None and state != current.get(key):
            final[key] = state
    return final, changes


def merge_fields(survivor: Mapping[str, FieldValue], loser: Mapping[str, FieldValue],
                 survivor_id: int) -> tuple[dict[str, FieldValue], list[FieldChange]]:
    """The survivor's fields after taking each newer field of the merged profile."""
    current = {(survivor_id, name): v for name, v in survivor.items()}
    facts = [((survivor_id, name), v, None) for name, v in loser.items()]
    final, changes = reconcile_fields(current, facts)
    return {name: v for (_, name), v in final.items()}, changes


# ---------------------------------------------------------------- entities


class EntityState(NamedTuple):
    """An entity as stored; `data` None means deleted (a tombstone that keeps its version)."""

    profile_id: int
    parent: tuple[str, str] | None
    data: Mapping[str, Any] | None
    version: str


EntityKey = tuple[str, str]  # (kind, entity id)


def entity_facts(mutations: Sequence[ProfileMutation],
                 profile_ids: Sequence[int]) -> list[tuple[EntityKey, EntityState]]:
    """The entity states the mutations carry, given the profile each one resolved to."""
    return [((m.entity.kind, m.entity.entity_id),
             EntityState(pid, m.entity.parent, m.entity.data, m.version.key()))
            for m, pid in zip(mutations, profile_ids, strict=True) if m.entity is not None]


def reconcile_entities(current: Mapping[EntityKey, EntityState],
                       incoming: Iterable[tuple[EntityKey, EntityState]]) -> dict[EntityKey, EntityState]:
    """The newest state of each entity that moved. Columns absent from a newer image
    (unavailable TOAST values) keep their previous value."""
    final: dict[EntityKey, EntityState] = {}
    for key, new in sorted(incoming, key=lambda kv: kv[1].version):
        state = final.get(key) or current.get(key)
        if state is not None and new.version <= state.version:
            continue
        if new.data is not None and state is not None and state.data is not None:
            new = EntityState(new.profile_id, new.parent, {**state.data, **new.data}, new.version)
        final[key] = new
    return final
