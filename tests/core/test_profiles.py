"""Reconcile, the decision part: which profile a change belongs to, and which facts win."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cdc_sync.core.events import RecordRef
from cdc_sync.core.mutations import IdentifierClaim, ProfileMutation, Version
from cdc_sync.core.profiles import (
    EntityKey,
    EntityState,
    FieldChange,
    FieldKey,
    FieldValue,
    IdentifierKey,
    IdentifierWrite,
    Incoming,
    Merge,
    NewProfile,
    StoredIdentifier,
    Target,
    field_facts,
    merge_fields,
    reconcile_entities,
    reconcile_fields,
    resolve_identities,
)

COMMIT_US = 1_748_855_647_000_000


def version(n: int) -> Version:
    """The n-th fact of the shop source: larger n, later commit."""
    return Version(COMMIT_US + n, (27_000_000, 27_000_000 + n), 2, "shop")


def vkey(n: int) -> str:
    return version(n).key()


def ref(offset: int) -> RecordRef:
    return RecordRef("shop.public.users", 0, offset)


def claim(type_: str, value: str, live: bool = True) -> IdentifierClaim:
    return IdentifierClaim(type_, value, live)


def mutation(n: int, *claims: IdentifierClaim, attributes: Mapping[str, Any] | None = None,
             deleted: frozenset[str] = frozenset()) -> ProfileMutation:
    """A mutation at version n, read from offset n."""
    return ProfileMutation(ref=ref(n), table="shop:public.users", version=version(n),
                           identifiers=claims, attributes=attributes or {}, deleted=deleted)


def stored(profile_id: int, n: int, live: bool = True) -> StoredIdentifier:
    return StoredIdentifier(profile_id, live, vkey(n))


def value(v: Any, n: int) -> FieldValue:
    return FieldValue(v, False, vkey(n))


def tombstone(n: int) -> FieldValue:
    return FieldValue(None, True, vkey(n))


CITY: FieldKey = (1, "city")


def fact(v: FieldValue, key: FieldKey = CITY, offset: int = 0) -> Incoming:
    return (key, v, ref(offset))


# ---------------------------------------------------------------- fields: one fact at a time


@pytest.mark.parametrize(("incoming", "final", "changed"), [
    (value("Paris", 2), value("Paris", 2), True),
    (value("Paris", 0), None, False),
    (value("London", 1), None, False),
    (value("Paris", 1), None, False),
    (value("London", 2), value("London", 2), False),
], ids=["newer-wins", "older-ignored", "equal-version-same-value-is-a-no-op",
        "equal-version-is-the-same-fact-so-the-stored-one-stays", "newer-same-value-moves-only-the-version"])
def test_a_fact_is_applied_only_when_newer_and_recorded_only_when_it_changes_the_value(
        incoming: FieldValue, final: FieldValue | None, changed: bool) -> None:
    current = {CITY: value("London", 1)}
    got, changes = reconcile_fields(current, [fact(incoming)])
    assert got == ({CITY: final} if final else {})
    assert [(c.old, c.new) for c in changes] == ([(current[CITY], incoming)] if changed else [])


def test_a_field_seen_for_the_first_time_is_a_change_from_nothing() -> None:
    final, changes = reconcile_fields({}, [fact(value("Paris", 1), offset=9)])
    assert final == {CITY: value("Paris", 1)}
    assert changes == [FieldChange(1, "city", None, value("Paris", 1), ref(9))]


def test_a_delete_replaces_the_value_with_a_tombstone() -> None:
    final, changes = reconcile_fields({CITY: value("London", 1)}, [fact(tombstone(2))])
    assert final == {CITY: tombstone(2)}
    assert [(c.old, c.new) for c in changes] == [(value("London", 1), tombstone(2))]


def test_an_older_update_cannot_undo_a_stored_tombstone() -> None:
    final, changes = reconcile_fields({CITY: tombstone(5)}, [fact(value("London", 4))])
    assert (final, changes) == ({}, [])


def test_an_older_update_in_the_same_batch_cannot_undo_a_delete() -> None:
    final, changes = reconcile_fields({}, [fact(tombstone(5)), fact(value("London", 4))])
    assert final == {CITY: tombstone(5)}
    assert [c.new for c in changes] == [value("London", 4), tombstone(5)]


def test_a_newer_update_after_a_delete_brings_the_field_back() -> None:
    final, changes = reconcile_fields({CITY: tombstone(5)}, [fact(value("Rome", 6))])
    assert final == {CITY: value("Rome", 6)}
    assert [(c.old, c.new) for c in changes] == [(tombstone(5), value("Rome", 6))]


def test_a_newer_tombstone_over_a_tombstone_moves_only_the_version() -> None:
    final, changes = reconcile_fields({CITY: tombstone(5)}, [fact(tombstone(6))])
    assert (final, changes) == ({CITY: tombstone(6)}, [])


def test_deleting_a_field_that_never_existed_stores_a_tombstone_and_records_it() -> None:
    # The tombstone must be stored (a late older update must not create the field);
    # the history also gets a "nothing -> deleted" entry.
    final, changes = reconcile_fields({}, [fact(tombstone(5))])
    assert final == {CITY: tombstone(5)}
    assert [(c.old, c.new) for c in changes] == [(None, tombstone(5))]


def test_a_value_that_changes_from_1_to_true_is_recorded_in_the_history() -> None:
    key = (1, "preferences")
    final, changes = reconcile_fields({key: value({"sms": 1}, 1)}, [fact(value({"sms": True}, 2), key)])
    assert final == {key: value({"sms": True}, 2)}
    assert [(c.old, c.new) for c in changes] == [(value({"sms": 1}, 1), value({"sms": True}, 2))]


# ---------------------------------------------------------------- fields: history


def test_history_lists_each_change_in_version_order_with_the_value_before_it() -> None:
    facts = [fact(value("C", 3), offset=3), fact(value("A", 1), offset=1), fact(value("B", 2), offset=2)]
    final, changes = reconcile_fields({CITY: value("Z", 0)}, facts)
    assert final == {CITY: value("C", 3)}
    assert [(c.old.value if c.old else None, c.new.value, c.ref) for c in changes] == [
        ("Z", "A", ref(1)), ("A", "B", ref(2)), ("B", "C", ref(3))]


def test_history_skips_a_newer_fact_that_repeats_the_value() -> None:
    facts = [fact(value("A", 1)), fact(value("A", 2)), fact(value("B", 3))]
    _, changes = reconcile_fields({}, facts)
    assert [(c.old.version if c.old else None, c.new.version) for c in changes] == [
        (None, vkey(1)), (vkey(2), vkey(3))]


def test_facts_about_other_fields_and_profiles_do_not_interfere() -> None:
    current = {(1, "city"): value("London", 5), (2, "city"): value("Oslo", 5)}
    final, changes = reconcile_fields(current, [fact(value("Paris", 1), (1, "country")),
                                                fact(value("Rome", 6), (2, "city"))])
    assert final == {(1, "country"): value("Paris", 1), (2, "city"): value("Rome", 6)}
    assert {(c.profile_id, c.name) for c in changes} == {(1, "country"), (2, "city")}


# ---------------------------------------------------------------- fields: properties

FIELD_KEYS: list[FieldKey] = [(1, "city"), (1, "phone"), (2, "city")]


@st.composite
def field_histories(draw: st.DrawFn) -> tuple[dict[FieldKey, FieldValue], list[Incoming]]:
    """Stored values and a batch of facts; one version is one fact (redeliveries repeat it)."""
    facts: dict[tuple[FieldKey, int], FieldValue] = {}
    for key, n, v in draw(st.lists(st.tuples(st.sampled_from(FIELD_KEYS), st.integers(0, 12),
                                             st.sampled_from(["a", "b", None])), max_size=25)):
        facts.setdefault((key, n), tombstone(n) if v is None else value(v, n))
    current = {}
    for key in draw(st.sets(st.sampled_from(FIELD_KEYS))):
        n = draw(st.integers(0, 12))
        current[key] = facts.get((key, n), value(draw(st.sampled_from(["a", "b"])), n))
    incoming: list[Incoming] = [(key, v, ref(n)) for (key, n), v in facts.items()]
    incoming += draw(st.lists(st.sampled_from(incoming), max_size=5)) if incoming else []
    return current, incoming


def change_set(changes: Sequence[FieldChange]) -> list[tuple[Any, ...]]:
    return sorted((c.profile_id, c.name, c.new.version, repr(c.old), repr(c.new),
                   c.ref.offset if c.ref else -1) for c in changes)


@given(field_histories(), st.randoms(use_true_random=False))
def test_reconcile_fields_is_independent_of_the_order_of_the_facts(
        history: tuple[dict[FieldKey, FieldValue], list[Incoming]], rnd: random.Random) -> None:
    current, incoming = history
    shuffled = list(incoming)
    rnd.shuffle(shuffled)
    final, changes = reconcile_fields(current, incoming)
    final2, changes2 = reconcile_fields(current, shuffled)
    assert final == final2
    assert change_set(changes) == change_set(changes2)


@given(field_histories())
def test_each_field_ends_at_its_newest_fact(
        history: tuple[dict[FieldKey, FieldValue], list[Incoming]]) -> None:
    current, incoming = history
    final, _ = reconcile_fields(current, incoming)
    newest = dict(current)
    for key, v, _ref in incoming:
        if key not in newest or v.version > newest[key].version:
            newest[key] = v
    assert {**current, **final} == newest
    assert all(current.get(key) != v for key, v in final.items())


@given(field_histories(), st.integers(0, 30))
def test_splitting_a_batch_in_two_gives_the_same_fields(
        history: tuple[dict[FieldKey, FieldValue], list[Incoming]], cut: int) -> None:
    current, incoming = history
    first, _ = reconcile_fields(current, incoming[:cut])
    second, _ = reconcile_fields({**current, **first}, incoming[cut:])
    whole, _ = reconcile_fields(current, incoming)
    assert {**current, **first, **second} == {**current, **whole}


@given(field_histories())
def test_each_change_starts_from_the_value_the_previous_one_left(
        history: tuple[dict[FieldKey, FieldValue], list[Incoming]]) -> None:
    current, incoming = history
    _, changes = reconcile_fields(current, incoming)
    state: dict[FieldKey, FieldValue] = dict(current)
    for c in changes:
        before = state.get((c.profile_id, c.name))
        if before is None:
            assert c.old is None
        else:  # `old` may be a newer fact of the same value, which moved only the version
            assert c.old is not None
            assert (c.old.value, c.old.deleted) == (before.value, before.deleted)
            assert before.version <= c.old.version < c.new.version
            assert (c.old.value, c.old.deleted) != (c.new.value, c.new.deleted)
        state[(c.profile_id, c.name)] = c.new


# ---------------------------------------------------------------- field_facts


def test_field_facts_flattens_attributes_and_deletions_onto_the_resolved_profiles() -> None:
    m1 = mutation(1, claim("user_id", "1"), attributes={"city": "Paris", "phone": "+33 1"},
                  deleted=frozenset({"country"}))
    m2 = mutation(2, claim("user_id", "2"), attributes={"city": "Rome"})
    facts = field_facts([m1, m2], [10, 20])
    assert sorted(facts, key=lambda f: f[0]) == [
        ((10, "city"), value("Paris", 1), ref(1)),
        ((10, "country"), tombstone(1), ref(1)),
        ((10, "phone"), value("+33 1", 1), ref(1)),
        ((20, "city"), value("Rome", 2), ref(2)),
    ]


def test_field_facts_refuses_a_profile_list_of_another_length() -> None:
    with pytest.raises(ValueError):
        field_facts([mutation(1, claim("user_id", "1"), attributes={"city": "Paris"})], [])


# ---------------------------------------------------------------- merge_fields


def test_merge_fields_keeps_the_newer_of_each_field() -> None:
    survivor = {"city": value("London", 5), "phone": value("+44", 1), "tier": value("gold", 3)}
    loser = {"city": value("Paris", 2), "phone": value("+33", 4), "email_ok": value(True, 1),
             "tier": tombstone(6)}
    final, changes = merge_fields(survivor, loser, survivor_id=7)
    assert final == {"phone": value("+33", 4), "email_ok": value(True, 1), "tier": tombstone(6)}
    assert {(c.profile_id, c.name, c.ref) for c in changes} == {
        (7, "phone", None), (7, "email_ok", None), (7, "tier", None)}


def test_merge_fields_with_an_empty_loser_changes_nothing() -> None:
    assert merge_fields({"city": value("London", 5)}, {}, survivor_id=7) == ({}, [])


field_maps = st.dictionaries(
    st.sampled_from(["city", "phone", "tier"]),
    st.builds(lambda v, n: value(v, n) if v is not None else tombstone(n),
              st.sampled_from(["a", "b", None]), st.integers(0, 9)))


@given(field_maps, field_maps)
def test_merged_profile_holds_the_newer_version_of_every_field_of_both(
        survivor: dict[str, FieldValue], loser: dict[str, FieldValue]) -> None:
    final, _ = merge_fields(survivor, loser, survivor_id=1)
    merged = {**survivor, **final}
    for name in survivor.keys() | loser.keys():
        versions = [v.version for v in (survivor.get(name), loser.get(name)) if v is not None]
        assert merged[name].version == max(versions)


# ---------------------------------------------------------------- entities

CART: EntityKey = ("cart", "7")


def cart(n: int, data: Mapping[str, Any] | None, profile_id: int = 1) -> EntityState:
    return EntityState(profile_id, None, data, vkey(n))


@pytest.mark.parametrize(("incoming", "expected"), [
    (cart(2, {"status": "paid"}), {CART: cart(2, {"status": "paid"})}),
    (cart(0, {"status": "paid"}), {}),
    (cart(1, {"status": "paid"}), {}),
], ids=["newer-wins", "older-ignored", "equal-version-ignored"])
def test_an_entity_state_is_applied_only_when_newer(
        incoming: EntityState, expected: dict[EntityKey, EntityState]) -> None:
    assert reconcile_entities({CART: cart(1, {"status": "open"})}, [(CART, incoming)]) == expected


def test_a_newer_image_without_a_column_keeps_the_stored_value_of_that_column() -> None:
    current = {CART: cart(1, {"status": "open", "note": "big toast value"})}
    final = reconcile_entities(current, [(CART, cart(2, {"status": "paid"}))])
    assert final == {CART: cart(2, {"status": "paid", "note": "big toast value"})}


def test_a_column_absent_from_the_newest_image_comes_from_the_image_before_it_in_the_batch() -> None:
    incoming = [(CART, cart(3, {"status": "paid"})), (CART, cart(2, {"status": "open", "note": "n2"}))]
    assert reconcile_entities({}, incoming) == {CART: cart(3, {"status": "paid", "note": "n2"})}


def test_a_delete_leaves_a_tombstone_an_older_update_cannot_undo() -> None:
    final = reconcile_entities({CART: cart(1, {"status": "open"})},
                               [(CART, cart(5, None)), (CART, cart(4, {"status": "paid"}))])
    assert final == {CART: cart(5, None)}
    assert reconcile_entities(final, [(CART, cart(4, {"status": "paid"}))]) == {}


def test_an_entity_created_again_after_a_delete_carries_nothing_over() -> None:
    final = reconcile_entities({CART: cart(5, None)}, [(CART, cart(6, {"status": "open"}))])
    assert final == {CART: cart(6, {"status": "open"})}


def test_an_entity_moved_to_another_profile_takes_the_newer_owner() -> None:
    final = reconcile_entities({CART: cart(1, {"status": "open"}, profile_id=1)},
                               [(CART, cart(2, {"status": "open"}, profile_id=2))])
    assert final[CART].profile_id == 2


@st.composite
def entity_batches(draw: st.DrawFn) -> list[tuple[EntityKey, EntityState]]:
    """Images of two carts, some without `status` (unchanged TOAST), and deletes; one version is one fact."""
    seen: dict[tuple[EntityKey, int], EntityState] = {}
    for key, n, status in draw(st.lists(st.tuples(st.sampled_from([CART, ("cart", "8")]),
                                                  st.integers(0, 9),
                                                  st.sampled_from(["open", "paid", "", None])), max_size=15)):
        data = None if status is None else {"n": n, **({"status": status} if status else {})}
        seen.setdefault((key, n), cart(n, data))
    return [(key, state) for (key, _), state in seen.items()]


ENTITY_CURRENT = {CART: cart(4, {"status": "open", "n": 4})}


@given(entity_batches(), st.randoms(use_true_random=False))
def test_reconcile_entities_is_independent_of_the_order_of_the_images(
        incoming: list[tuple[EntityKey, EntityState]], rnd: random.Random) -> None:
    shuffled = list(incoming)
    rnd.shuffle(shuffled)
    assert reconcile_entities(ENTITY_CURRENT, incoming) == reconcile_entities(ENTITY_CURRENT, shuffled)


@given(entity_batches())
def test_each_entity_ends_at_its_newest_image_with_absent_columns_from_the_images_before_it(
        incoming: list[tuple[EntityKey, EntityState]]) -> None:
    final = {**ENTITY_CURRENT, **reconcile_entities(ENTITY_CURRENT, incoming)}
    for key in {k for k, _ in incoming} | ENTITY_CURRENT.keys():
        # Every state of the entity that counts: the stored one and the newer incoming ones.
        floor = ENTITY_CURRENT[key].version if key in ENTITY_CURRENT else ""
        states = sorted([s for k, s in incoming if k == key and s.version > floor]
                        + ([ENTITY_CURRENT[key]] if key in ENTITY_CURRENT else []),
                        key=lambda s: s.version)
        newest = states[-1]
        assert final[key].version == newest.version
        if newest.data is None:
            assert final[key].data is None
            continue
        since_delete: list[EntityState] = []
        for s in states:
            since_delete = [] if s.data is None else [*since_delete, s]
        expected: dict[str, Any] = {}
        for s in since_delete:
            expected.update(s.data or {})
        assert final[key].data == expected


# ---------------------------------------------------------------- identities: targets


def test_a_mutation_with_only_new_identifiers_creates_a_profile_born_at_its_version() -> None:
    plan = resolve_identities([mutation(3, claim("user_id", "1"), claim("email", "a@x.io"))], {}, {})
    assert plan.targets == [NewProfile(0)]
    assert plan.new_profiles == [vkey(3)]
    assert plan.merges == []
    assert plan.identifiers == [IdentifierWrite("email", "a@x.io", NewProfile(0), True, vkey(3)),
                                IdentifierWrite("user_id", "1", NewProfile(0), True, vkey(3))]


def test_two_mutations_sharing_an_identifier_land_on_one_new_profile() -> None:
    ms = [mutation(2, claim("user_id", "1")), mutation(1, claim("user_id", "1"), claim("email", "a@x.io"))]
    plan = resolve_identities(ms, {}, {})
    assert plan.targets == [NewProfile(0), NewProfile(0)]
    assert plan.new_profiles == [vkey(1)]


def test_mutations_linked_through_a_chain_of_identifiers_land_on_one_profile() -> None:
    ms = [mutation(1, claim("user_id", "1")), mutation(2, claim("cart_id", "7")),
          mutation(3, claim("user_id", "1"), claim("cart_id", "7"))]
    plan = resolve_identities(ms, {}, {})
    assert len(set(plan.targets)) == 1
    assert len(plan.new_profiles) == 1


def test_mutations_without_a_shared_identifier_land_on_separate_new_profiles() -> None:
    plan = resolve_identities([mutation(1, claim("user_id", "1")), mutation(2, claim("user_id", "2"))],
                              {}, {})
    assert sorted(plan.new_profiles) == [vkey(1), vkey(2)]
    assert plan.targets[0] != plan.targets[1]


def test_a_mutation_with_a_known_identifier_lands_on_its_profile() -> None:
    plan = resolve_identities([mutation(5, claim("user_id", "1"), claim("email", "a@x.io"))],
                              {("user_id", "1"): stored(40, 1)}, {40: vkey(1)})
    assert plan.targets == [40]
    assert plan.new_profiles == []
    assert plan.merges == []


def test_a_stored_identifier_that_is_no_longer_live_still_links_to_its_profile() -> None:
    # "Every identifier a row ever carried links": a freed email claimed again joins its old profile.
    plan = resolve_identities([mutation(5, claim("email", "a@x.io"))],
                              {("email", "a@x.io"): stored(40, 2, live=False)}, {40: vkey(1)})
    assert plan.targets == [40]


# ---------------------------------------------------------------- identities: merges


@pytest.mark.parametrize(("born", "survivor", "loser"), [
    ({40: vkey(1), 41: vkey(2)}, 40, 41),
    ({40: vkey(2), 41: vkey(1)}, 41, 40),
    ({40: vkey(1), 41: vkey(1)}, 40, 41),
], ids=["first-born-survives", "first-born-survives-even-with-the-higher-id", "tie-lower-id-survives"])
def test_identifiers_of_two_profiles_merge_them_into_the_first_born(
        born: dict[int, str], survivor: int, loser: int) -> None:
    known = {("user_id", "1"): stored(40, 1), ("email", "a@x.io"): stored(41, 2)}
    plan = resolve_identities([mutation(5, claim("user_id", "1"), claim("email", "a@x.io"))], known, born)
    assert plan.targets == [survivor]
    proof = ("user_id", "1") if loser == 40 else ("email", "a@x.io")
    assert plan.merges == [Merge(survivor, loser, proof)]


def test_a_merge_of_three_profiles_names_each_loser_once_with_its_own_proof() -> None:
    known = {("user_id", "1"): stored(40, 1), ("email", "a@x.io"): stored(41, 1),
             ("crm_contact_id", "9"): stored(42, 1)}
    ms = [mutation(5, claim("user_id", "1"), claim("email", "a@x.io")),
          mutation(6, claim("email", "a@x.io"), claim("crm_contact_id", "9"))]
    plan = resolve_identities(ms, known, {40: vkey(3), 41: vkey(1), 42: vkey(2)})
    assert plan.targets == [41, 41]
    assert plan.merges == [Merge(41, 40, ("user_id", "1")), Merge(41, 42, ("crm_contact_id", "9"))]


def test_a_merge_proof_is_an_identifier_the_batch_claims_and_the_loser_holds() -> None:
    known = {("user_id", "1"): stored(40, 1), ("email", "a@x.io"): stored(41, 1),
             ("email", "old@x.io"): stored(41, 1)}
    plan = resolve_identities([mutation(5, claim("user_id", "1")),
                               mutation(6, claim("user_id", "1"), claim("email", "a@x.io"))],
                              known, {40: vkey(1), 41: vkey(2)})
    assert plan.merges == [Merge(40, 41, ("email", "a@x.io"))]


def test_an_older_fact_in_the_batch_moves_the_survivors_birth_earlier() -> None:
    plan = resolve_identities([mutation(1, claim("user_id", "1"))],
                              {("user_id", "1"): stored(40, 5)}, {40: vkey(5)})
    assert plan.born == {40: vkey(1)}


def test_a_batch_newer_than_the_survivors_birth_leaves_born_alone() -> None:
    plan = resolve_identities([mutation(9, claim("user_id", "1"), claim("email", "a@x.io"))],
                              {("user_id", "1"): stored(40, 5), ("email", "a@x.io"): stored(41, 6)},
                              {40: vkey(5), 41: vkey(6)})
    assert plan.born == {}


# ---------------------------------------------------------------- identities: identifier writes


@pytest.mark.parametrize(("stored_n", "written"), [(4, True), (5, False), (6, False)],
                         ids=["stored-older-is-overwritten", "stored-equal-is-kept", "stored-newer-is-kept"])
def test_an_identifier_is_written_only_when_the_claim_is_newer_than_the_stored_one(
        stored_n: int, written: bool) -> None:
    plan = resolve_identities([mutation(5, claim("user_id", "1", live=False))],
                              {("user_id", "1"): stored(40, stored_n)}, {40: vkey(1)})
    assert plan.identifiers == ([IdentifierWrite("user_id", "1", 40, False, vkey(5))] if written else [])


def test_the_newest_claim_of_an_identifier_in_the_batch_decides_whether_it_is_live() -> None:
    ms = [mutation(6, claim("email", "a@x.io", live=False), claim("user_id", "1")),
          mutation(5, claim("email", "a@x.io"), claim("user_id", "1"))]
    plan = resolve_identities(ms, {}, {})
    assert IdentifierWrite("email", "a@x.io", NewProfile(0), False, vkey(6)) in plan.identifiers


def test_identifiers_of_a_merged_profile_are_written_to_the_survivor() -> None:
    known = {("user_id", "1"): stored(40, 1), ("email", "a@x.io"): stored(41, 1)}
    plan = resolve_identities([mutation(5, claim("user_id", "1"), claim("email", "a@x.io"))],
                              known, {40: vkey(1), 41: vkey(2)})
    assert {(w.type, w.target) for w in plan.identifiers} == {("user_id", 40), ("email", 40)}


# ---------------------------------------------------------------- identities: properties

ID_UNIVERSE: list[IdentifierKey] = [("user_id", "1"), ("user_id", "2"), ("email", "a@x.io"),
                                    ("email", "b@x.io"), ("cart_id", "7"), ("crm_contact_id", "9")]


@st.composite
def identity_batches(draw: st.DrawFn) -> tuple[list[ProfileMutation], dict[IdentifierKey, StoredIdentifier],
                                                dict[int, str]]:
    """A batch over a small set of identifiers, some already stored on profiles 40..43."""
    born = {pid: vkey(draw(st.integers(0, 3))) for pid in range(40, 44)}
    known = {key: StoredIdentifier(pid, draw(st.booleans()), vkey(draw(st.integers(0, 12))))
             for key, pid in draw(st.dictionaries(st.sampled_from(ID_UNIVERSE), st.integers(40, 43))).items()}
    id_sets = draw(st.lists(st.sets(st.sampled_from(ID_UNIVERSE), min_size=1), min_size=1, max_size=8))
    # One version per mutation: equal versions are one fact, and two events never share one.
    ns = draw(st.lists(st.integers(0, 12), min_size=len(id_sets), max_size=len(id_sets), unique=True))
    ms = []
    for offset, (ids, n) in enumerate(zip(id_sets, ns, strict=True)):
        claims = tuple(claim(t, v, draw(st.booleans())) for t, v in sorted(ids))
        ms.append(ProfileMutation(ref(offset), "shop:public.users", version(n), claims))
    return ms, known, born


def canonical_targets(ms: Sequence[ProfileMutation], targets: Sequence[Target]) -> dict[int, Any]:
    """Each mutation's target, a new profile named by the offsets of the mutations it holds."""
    members: dict[Target, set[int]] = {}
    for m, t in zip(ms, targets, strict=True):
        members.setdefault(t, set()).add(m.ref.offset)
    return {m.ref.offset: t if isinstance(t, int) else frozenset(members[t])
            for m, t in zip(ms, targets, strict=True)}


@given(identity_batches(), st.randoms(use_true_random=False))
def test_resolve_identities_is_independent_of_the_order_of_the_batch(
        batch: tuple[list[ProfileMutation], dict[IdentifierKey, StoredIdentifier], dict[int, str]],
        rnd: random.Random) -> None:
    ms, known, born = batch
    shuffled = list(ms)
    rnd.shuffle(shuffled)
    a, b = resolve_identities(ms, known, born), resolve_identities(shuffled, known, born)
    assert canonical_targets(ms, a.targets) == canonical_targets(shuffled, b.targets)
    assert sorted(a.new_profiles) == sorted(b.new_profiles)
    assert {(m.survivor, m.loser) for m in a.merges} == {(m.survivor, m.loser) for m in b.merges}
    assert a.born == b.born
    assert ({(w.type, w.value, w.live, w.version) for w in a.identifiers}
            == {(w.type, w.value, w.live, w.version) for w in b.identifiers})


@given(identity_batches())
def test_mutations_sharing_an_identifier_or_a_known_profile_share_a_target(
        batch: tuple[list[ProfileMutation], dict[IdentifierKey, StoredIdentifier], dict[int, str]]) -> None:
    ms, known, born = batch
    plan = resolve_identities(ms, known, born)
    for i, m in enumerate(ms):
        for j, other in enumerate(ms):
            mine = {(c.type, c.value) for c in m.identifiers}
            theirs = {(c.type, c.value) for c in other.identifiers}
            owners = {known[k].profile_id for k in mine if k in known}
            if mine & theirs or owners & {known[k].profile_id for k in theirs if k in known}:
                assert plan.targets[i] == plan.targets[j]


@given(identity_batches())
def test_every_merge_keeps_the_first_born_and_names_a_proof_the_loser_holds(
        batch: tuple[list[ProfileMutation], dict[IdentifierKey, StoredIdentifier], dict[int, str]]) -> None:
    ms, known, born = batch
    plan = resolve_identities(ms, known, born)
    claimed = {(c.type, c.value) for m in ms for c in m.identifiers}
    losers = [m.loser for m in plan.merges]
    assert len(losers) == len(set(losers))
    for merge in plan.merges:
        assert (born[merge.survivor], merge.survivor) < (born[merge.loser], merge.loser)
        assert merge.proof in claimed
        assert known[merge.proof].profile_id == merge.loser
        assert merge.survivor in plan.targets


@given(identity_batches())
def test_identifier_writes_are_the_newest_claims_newer_than_what_is_stored(
        batch: tuple[list[ProfileMutation], dict[IdentifierKey, StoredIdentifier], dict[int, str]]) -> None:
    ms, known, born = batch
    plan = resolve_identities(ms, known, born)
    newest: dict[IdentifierKey, str] = {}
    for m in ms:
        for c in m.identifiers:
            newest[(c.type, c.value)] = max(newest.get((c.type, c.value), ""), m.version.key())
    expected = {k for k, v in newest.items() if k not in known or v > known[k].version}
    assert {(w.type, w.value) for w in plan.identifiers} == expected
    for w in plan.identifiers:
        assert w.version == newest[(w.type, w.value)]
        holder = next(i for i, m in enumerate(ms)
                      if (w.type, w.value) in {(c.type, c.value) for c in m.identifiers})
        assert w.target == plan.targets[holder]
