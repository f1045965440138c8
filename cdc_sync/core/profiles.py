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


def _find(parent: dict[Any, Any], node: Any) -> Any:
    """Union-find root of `node`, halving the path on the way; unseen nodes are their own root."""
    while True:
        up = parent.get(node, node)
        if up == node:
            return node
        grand = parent.get(up, up)
        parent[node] = grand
        node = grand


def resolve_identities(mutations: Sequence[ProfileMutation],
                       known: Mapping[IdentifierKey, StoredIdentifier],
                       born: Mapping[int, str]) -> IdentityPlan:
    """Link each mutation to one profile through its identifiers.

    Every identifier a row ever carried links (live or not), so the grouping is the
    connected components of all claims, independent of order. A group touching several
    existing profiles merges them into the one born first (ties: lowest id).
    In: the batch, the stored identifiers it mentions, and `born` of the profiles they name.
    """
    # Nodes are identifier keys (tuples) and stored profile ids (ints); a mutation joins the
    # component of its first identifier (every mutation has one).
    parent: dict[Any, Any] = {}
    for m in mutations:
        first = None
        for claim in m.identifiers:
            key = (claim.type, claim.value)
            stored = known.get(key)
            for other in (first, None if stored is None else stored.profile_id):
                if other is not None:
                    a, b = _find(parent, key), _find(parent, other)
                    if a != b:
                        parent[a] = b
            if first is None:
                first = key
    groups: dict[Any, list[int]] = defaultdict(list)
    for i, m in enumerate(mutations):
        if m.identifiers:
            claim = m.identifiers[0]
            groups[_find(parent, (claim.type, claim.value))].append(i)
        else:  # the mapping never makes one, but such a row would be a person of its own
            groups[("mutation", i)].append(i)

    plan = IdentityPlan(targets=[NewProfile(-1)] * len(mutations))
    for members in groups.values():
        _plan_group(plan, mutations, members, known, born)
    return plan


def _scan_group(mutations: Sequence[ProfileMutation], members: list[int],
                known: Mapping[IdentifierKey, StoredIdentifier]
                ) -> tuple[dict[IdentifierKey, tuple[str, bool]], dict[int, IdentifierKey], str]:
    """A group's newest claim per identifier, its stored profiles (each with the first identifier
    linking it) and its oldest version."""
    newest: dict[IdentifierKey, tuple[str, bool]] = {}
    existing: dict[int, IdentifierKey] = {}
    first_seen = mutations[members[0]].version.key()
    for i in members:
        m = mutations[i]
        version = m.version.key()
        first_seen = min(first_seen, version)
        for claim in m.identifiers:
            key = (claim.type, claim.value)
            seen = newest.get(key)
            if seen is None or version > seen[0]:
                newest[key] = (version, claim.live)
            stored = known.get(key)
            if stored is not None and stored.profile_id not in existing:
                existing[stored.profile_id] = key
    return newest, existing, first_seen


def _plan_group(plan: IdentityPlan, mutations: Sequence[ProfileMutation], members: list[int],
                known: Mapping[IdentifierKey, StoredIdentifier], born: Mapping[int, str]) -> None:
    newest, existing, first_seen = _scan_group(mutations, members, known)
    target: Target
    if existing:
        survivor = min(existing, key=lambda pid: (born[pid], pid))
        target = survivor
        oldest = min([first_seen, *(born[p] for p in existing)])
        if oldest < born[survivor]:
            plan.born[survivor] = oldest
        plan.merges += [Merge(survivor, loser, existing[loser])
                        for loser in sorted(existing) if loser != survivor]
    else:
        target = NewProfile(len(plan.new_profiles))
        plan.new_profiles.append(first_seen)
    for i in members:
        plan.targets[i] = target
    for key in sorted(newest):  # the newest claim, when newer than what is stored (or new)
        version, live = newest[key]
        stored = known.get(key)
        if stored is None or version > stored.version:
            plan.identifiers.append(IdentifierWrite(key[0], key[1], target, live, version))


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
