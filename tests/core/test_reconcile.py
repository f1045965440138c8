"""Reconcile, the decision part: plan_batch over a hand-built StoreView decides which person
each source row belongs to, which identifiers it claims or releases, which profiles are made
or merged, and which entities move."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cdc_sync.core.events import RecordRef
from cdc_sync.core.mutations import EntityChange, IdentifierKey, Reference, RowChange, Version
from cdc_sync.core.profiles import RowTransition
from cdc_sync.core.reconcile import (
    NEVER_CLAIMED,
    BatchPlan,
    EntityState,
    Merge,
    StoredIdentifier,
    StoreView,
    claim_keys,
    claimant_tags,
    entity_rows,
    plan_batch,
    view_keys,
)
from cdc_sync.core.rows import RowId, RowState, row_tag

USERS = "shop:public.users"
CONSENTS = "shop:public.consents"
CARTS = "shop:public.carts"
ITEMS = "shop:public.cart_items"
ORDERS = "shop:public.orders"
CONTACTS = "crm:crm.contacts"
CUSTOMERS = "erp:erp.customers"

COMMIT_US = 1_748_855_647_000_000
SOURCE_OF = {"shop": 2, "crm": 1, "erp": 0}


def version(n: int, table: str = USERS) -> Version:
    """The n-th moment: larger n, later commit, whichever source the table is in."""
    source = table.split(":", 1)[0]
    position = (0, 27_000_000 + n) if source == "shop" else (1, 4 + n, 0)
    return Version(COMMIT_US + n * 1000, SOURCE_OF[source], source, position)


def vk(n: int | str) -> str:
    """A shop version key of moment n; a key given as text is taken as it is."""
    return n if isinstance(n, str) else version(n).key()


def crm(n: int) -> str:
    return version(n, CONTACTS).key()


def rid(table: str, key: int) -> RowId:
    return (table, f'{{"id":{key}}}')


def tag(table: str, key: int) -> str:
    return row_tag(rid(table, key))


def change(table: str, key: int, n: int, *, ids: Sequence[IdentifierKey] = (),
           owner: Reference | None = None, attrs: Mapping[str, Any] | None = None,
           before: Mapping[str, Any] | None = None, deleted: bool = False,
           entity: EntityChange | None = None, tracked: bool = True) -> RowChange:
    """An event at moment n about row `key` of `table`, read from offset n."""
    return RowChange(ref=RecordRef(table, 0, n), table=table, row_key=rid(table, key)[1],
                     version=version(n, table), deleted=deleted, tracked=tracked, identifiers=tuple(ids),
                     owner=owner, attributes=attrs or {}, before=before, entity=entity)


def user(key: int, n: int, email: str | None = None, **attrs: Any) -> RowChange:
    ids = [("user_id", str(key))] + ([("email", email)] if email else [])
    return change(USERS, key, n, ids=ids, attrs=attrs)


def contact(key: int, n: int, email: str, **attrs: Any) -> RowChange:
    return change(CONTACTS, key, n, ids=[("email", email), ("crm_contact_id", str(key))], attrs=attrs)


def by_user(user_id: int) -> Reference:
    return Reference("identifier", "user_id", str(user_id))


def order(key: int, n: int, user_id: int) -> RowChange:
    return change(ORDERS, key, n, owner=by_user(user_id), tracked=False,
                  entity=EntityChange("order", str(key), {"status": "placed"}))


def cart(key: int, n: int, user_id: int) -> RowChange:
    return change(CARTS, key, n, owner=by_user(user_id), tracked=False,
                  entity=EntityChange("cart", str(key), {"status": "open"}, has_children=True))


def item(key: int, n: int, cart_id: int) -> RowChange:
    return change(ITEMS, key, n, owner=Reference("entity", "cart", str(cart_id)), tracked=False,
                  entity=EntityChange("cart_item", str(key), {"quantity": 1}))


def state(pid: int | None, n: int, *claims: IdentifierKey, live: bool = True, owner: Reference | None = None,
          entity: tuple[str, str] | None = None, **attrs: tuple[Any, int]) -> RowState:
    return RowState(pid, live, vk(n), claims, owner, entity, {k: (x, vk(m)) for k, (x, m) in attrs.items()})


def claimed(pid: int, n: int | str, *tags: str, released: Mapping[str, int | str] | None = None
            ) -> StoredIdentifier:
    return StoredIdentifier(pid, frozenset(tags), vk(n), {t: vk(m) for t, m in (released or {}).items()})


def view(rows: Mapping[RowId, RowState] | None = None,
         ids: Mapping[IdentifierKey, StoredIdentifier] | None = None,
         entities: Mapping[tuple[str, str], EntityState] | None = None,
         born: Mapping[int, int] | None = None,
         claimants: Mapping[str, int | None] | None = None) -> StoreView:
    return StoreView(dict(rows or {}), dict(ids or {}), dict(entities or {}),
                     {p: vk(n) for p, n in (born or {}).items()}, dict(claimants or {}))


def profile_of(plan: BatchPlan, row: RowId) -> int | None:
    pid = plan.rows[row].profile_id
    return None if pid is None else plan.resolve(pid)


U1, U2 = ("user_id", "1"), ("user_id", "2")
E, F, G = ("email", "e@x.test"), ("email", "f@x.test"), ("email", "g@x.test")
CRM5 = ("crm_contact_id", "5")
A, C = rid(USERS, 1), rid(USERS, 2)  # two users rows
B = rid(CONTACTS, 5)  # a CRM contact

# Sally (users row 1) is profile 1, born at moment 1: she claims user_id 1 and e@.
SALLY = view(rows={A: state(1, 1, U1, E, city=("Lyon", 1))},
             ids={U1: claimed(1, 1, tag(USERS, 1)), E: claimed(1, 1, tag(USERS, 1))}, born={1: 1})


# --- new people -------------------------------------------------------------------------------


def test_first_row_of_a_person_creates_a_profile_born_at_its_version() -> None:
    plan = plan_batch([user(1, 3, "e@x.test", city="Lyon")], view())
    assert plan.new_profiles == {-1: vk(3)}
    assert plan.rows == {A: state(-1, 3, U1, E, city=("Lyon", 3))}
    assert plan.merges == [] and plan.born == {}


def test_first_row_of_a_person_claims_its_identifiers_for_the_new_profile() -> None:
    plan = plan_batch([user(1, 3, "e@x.test")], view())
    assert plan.identifiers == {U1: claimed(-1, 3, tag(USERS, 1)), E: claimed(-1, 3, tag(USERS, 1))}


def test_two_new_people_in_one_batch_get_two_profiles() -> None:
    plan = plan_batch([user(1, 3, "e@x.test"), user(2, 4, "f@x.test")], view())
    assert plan.new_profiles == {-1: vk(3), -2: vk(4)}
    assert (profile_of(plan, A), profile_of(plan, C)) == (-1, -2)


def test_transition_names_the_row_its_state_person_and_record() -> None:
    first = user(1, 3, "e@x.test")
    plan = plan_batch([first], view())
    assert plan.transitions == [RowTransition(A, None, None, plan.rows[A], -1, first.ref)]


def test_transition_of_a_stored_row_carries_its_state_and_person_before_the_batch() -> None:
    update = user(1, 3, "e@x.test", city="Graz")
    plan = plan_batch([update], SALLY)
    assert plan.transitions == [RowTransition(A, SALLY.rows[A], 1, plan.rows[A], 1, update.ref)]


def test_transition_before_state_is_the_stores_not_the_batchs_earlier_event() -> None:
    first, second = user(1, 3, "e@x.test", city="Graz"), user(1, 4, "e@x.test", city="Wien")
    plan = plan_batch([first, second], SALLY)
    assert plan.transitions == [RowTransition(A, SALLY.rows[A], 1, plan.rows[A], 1, second.ref)]


# --- references -------------------------------------------------------------------------------


def test_reference_to_a_known_person_attaches_the_row_to_them() -> None:
    plan = plan_batch([change(CONSENTS, 3, 4, owner=by_user(1), attrs={"consent_email": True})], SALLY)
    assert profile_of(plan, rid(CONSENTS, 3)) == 1
    assert plan.new_profiles == {} and plan.identifiers == {}


def test_reference_to_an_unknown_person_creates_their_profile_named_only_by_references() -> None:
    plan = plan_batch([order(9, 2, user_id=1)], view())
    assert plan.new_profiles == {-1: vk(2)}
    assert plan.identifiers == {U1: StoredIdentifier(-1, frozenset(), NEVER_CLAIMED)}
    assert plan.entities[("order", "9")][1].profile_id == -1


def test_reference_before_the_persons_row_in_one_batch_gives_one_profile_without_merging() -> None:
    plan = plan_batch([order(9, 1, user_id=1), user(1, 2, "e@x.test")], view())
    assert plan.new_profiles == {-1: vk(1)}
    assert plan.merges == []
    assert profile_of(plan, A) == -1
    assert plan.identifiers[U1] == claimed(-1, 2, tag(USERS, 1))


def test_persons_row_arriving_after_references_joins_their_profile_without_merging() -> None:
    referenced = view(ids={U1: StoredIdentifier(7, frozenset(), NEVER_CLAIMED)}, born={7: 1},
                      entities={("order", "9"): EntityState(7, None, {"status": "placed"}, vk(1))})
    plan = plan_batch([user(1, 2, "e@x.test")], referenced)
    assert plan.new_profiles == {} and plan.merges == []
    assert profile_of(plan, A) == 7
    assert plan.identifiers[U1] == claimed(7, 2, tag(USERS, 1))


def test_claiming_an_identifier_only_references_named_merges_with_their_profile() -> None:
    # Orders named user_id 1 (profile 7); the CRM knew e@ (profile 8); Sally's row claims both.
    world = view(rows={B: state(8, 1, E, CRM5)},
                 ids={U1: StoredIdentifier(7, frozenset(), NEVER_CLAIMED),
                      E: claimed(8, 1, tag(CONTACTS, 5))},
                 born={7: 2, 8: 1})
    plan = plan_batch([user(1, 3, "e@x.test")], world)
    assert [m._replace(version="") for m in plan.merges] == [Merge(8, 7, U1, A)]
    assert profile_of(plan, A) == 8


def test_reference_change_moves_the_row_and_never_merges() -> None:
    consent = rid(CONSENTS, 3)
    world = view(rows={consent: state(1, 2, owner=by_user(1), consent_email=(True, 2))},
                 ids={U1: claimed(1, 1, tag(USERS, 1)), U2: claimed(2, 1, tag(USERS, 2))}, born={1: 1, 2: 1})
    moved = change(CONSENTS, 3, 5, owner=by_user(2), attrs={"consent_email": True},
                   before={"consent_email": True})
    plan = plan_batch([moved], world)
    assert profile_of(plan, consent) == 2
    assert plan.merges == [] and plan.identifiers == {}
    assert plan.rows[consent].attrs == {"consent_email": (True, vk(2))}  # moved, not changed
    assert plan.withdrawn == {(1, "consent_email"): (vk(5), moved.ref)}
    assert plan.withdrawn_by == {(tag(CONSENTS, 3), (1, "consent_email"))}
    assert [(t.before_profile, t.after_profile) for t in plan.transitions] == [(1, 2)]


def test_reference_set_to_null_detaches_the_row_and_withdraws_what_it_supplied() -> None:
    consent = rid(CONSENTS, 3)
    world = view(rows={consent: state(1, 2, owner=by_user(1), consent_email=(True, 2))},
                 ids={U1: claimed(1, 1, tag(USERS, 1))}, born={1: 1})
    guest = change(CONSENTS, 3, 5, attrs={"consent_email": True})
    plan = plan_batch([guest], world)
    assert plan.rows[consent].profile_id is None
    assert plan.withdrawn == {(1, "consent_email"): (vk(5), guest.ref)}
    assert plan.withdrawn_by == {(tag(CONSENTS, 3), (1, "consent_email"))}


# --- claims across tables ---------------------------------------------------------------------


def test_new_crm_row_claiming_an_email_of_a_users_row_joins_that_profile() -> None:
    plan = plan_batch([contact(5, 2, "e@x.test")], SALLY)
    assert profile_of(plan, B) == 1
    assert plan.merges == [] and plan.new_profiles == {}
    assert plan.identifiers[E] == claimed(1, crm(2), tag(USERS, 1), tag(CONTACTS, 5))


def test_crm_row_claiming_an_email_of_a_users_row_merges_their_profiles_with_the_row_as_proof() -> None:
    world = view(rows={**SALLY.rows, B: state(2, 2, F, CRM5, tier=("gold", 2))},
                 ids={**SALLY.identifiers, F: claimed(2, 2, tag(CONTACTS, 5)),
                      CRM5: claimed(2, 2, tag(CONTACTS, 5))},
                 born={1: 1, 2: 2})
    plan = plan_batch([contact(5, 3, "e@x.test", tier="gold")], world)
    assert [m._replace(version="") for m in plan.merges] == [Merge(1, 2, E, B)]
    assert plan.alias == {2: 1}
    assert profile_of(plan, B) == 1
    assert plan.transitions[0].before == world.rows[B]
    assert plan.transitions[0].before_profile == plan.transitions[0].after_profile == 1
    assert plan.withdrawn == {} and plan.withdrawn_by == set()  # it supplies its tier, now to the survivor


def test_merge_releases_the_claim_the_row_gave_up() -> None:
    world = view(rows={**SALLY.rows, B: state(2, 2, F, CRM5)},
                 ids={**SALLY.identifiers, F: claimed(2, 2, tag(CONTACTS, 5)),
                      CRM5: claimed(2, 2, tag(CONTACTS, 5))},
                 born={1: 1, 2: 2})
    plan = plan_batch([contact(5, 3, "e@x.test")], world)
    assert plan.identifiers[F] == claimed(2, 2, released={tag(CONTACTS, 5): crm(3)})
    assert CRM5 not in plan.identifiers  # claimed already: nothing to write


@pytest.mark.parametrize(("sally_born", "contact_born", "survivor", "loser"), [(1, 2, 1, 2), (3, 2, 2, 1)])
def test_merge_survivor_is_the_earlier_born_profile(
        sally_born: int, contact_born: int, survivor: int, loser: int) -> None:
    world = view(rows={**SALLY.rows, B: state(2, 2, F, CRM5)},
                 ids={**SALLY.identifiers, F: claimed(2, 2, tag(CONTACTS, 5))},
                 born={1: sally_born, 2: contact_born})
    plan = plan_batch([contact(5, 4, "e@x.test")], world)
    assert [(m.survivor, m.loser) for m in plan.merges] == [(survivor, loser)]


def test_row_claiming_identifiers_of_two_other_profiles_merges_all_three_into_the_earliest() -> None:
    erp = rid(CUSTOMERS, 5)
    world = view(rows={**SALLY.rows, B: state(2, 2, F), erp: state(3, 1, CRM5)},
                 ids={**SALLY.identifiers, F: claimed(2, 2, tag(CONTACTS, 5)),
                      CRM5: claimed(3, 1, tag(CUSTOMERS, 5))},
                 born={1: 1, 2: 2, 3: 0})
    plan = plan_batch([contact(5, 4, "e@x.test")], world)
    assert {(m.survivor, m.loser) for m in plan.merges} == {(3, 1), (3, 2)}
    assert profile_of(plan, B) == plan.resolve(1) == plan.resolve(2) == 3


@pytest.mark.parametrize(("claim_at", "same_person"), [(2, True), (5, False)],
                         ids=["claimed-while-held", "claimed-after-release"])
def test_claim_of_an_identifier_another_table_released_joins_only_if_the_claims_overlapped(
        claim_at: int, same_person: bool) -> None:
    # Sally's row gave e@ up at moment 3; the CRM row claims it at `claim_at`.
    world = view(ids={E: claimed(1, 1, released={tag(USERS, 1): 3})}, born={1: 1},
                 claimants={tag(USERS, 1): 1})
    plan = plan_batch([contact(5, claim_at, "e@x.test")], world)
    assert (profile_of(plan, B) == 1) is same_person
    assert plan.merges == []
    assert plan.identifiers[E].profile_id == profile_of(plan, B)


def test_withdrawals_of_a_merged_profile_follow_it_to_the_survivor() -> None:
    world = view(rows={**SALLY.rows, B: state(2, 2, F, CRM5, tier=("gold", 2))},
                 ids={**SALLY.identifiers, F: claimed(2, 2, tag(CONTACTS, 5)),
                      CRM5: claimed(2, 2, tag(CONTACTS, 5))},
                 born={1: 1, 2: 2})
    dropped = contact(5, 3, "f@x.test", tier=None)
    plan = plan_batch([dropped, contact(5, 4, "e@x.test")], world)
    assert plan.withdrawn == {(1, "tier"): (crm(3), dropped.ref)}
    assert plan.withdrawn_by == {(tag(CONTACTS, 5), (1, "tier"))}


# --- claims within one table ------------------------------------------------------------------

TWO_USERS = view(rows={A: state(1, 1, U1, E), C: state(2, 1, U2, F)},
                 ids={U1: claimed(1, 1, tag(USERS, 1)), E: claimed(1, 1, tag(USERS, 1)),
                      U2: claimed(2, 1, tag(USERS, 2)), F: claimed(2, 1, tag(USERS, 2))},
                 born={1: 1, 2: 1})


@pytest.mark.parametrize("release_first", [True, False], ids=["release-first", "claim-first"])
def test_same_table_email_reuse_takes_the_identifier_without_merging(release_first: bool) -> None:
    # Sally (row 1) gives e@ up at moment 3; row 2 takes it at moment 4.
    release, claim = user(1, 3, "g@x.test"), user(2, 4, "e@x.test")
    plan = plan_batch([release, claim] if release_first else [claim, release], TWO_USERS)
    assert plan.merges == []
    assert (profile_of(plan, A), profile_of(plan, C)) == (1, 2)
    assert plan.identifiers[E] == claimed(2, 4, tag(USERS, 2), released={tag(USERS, 1): 3})


def test_older_same_table_claim_does_not_take_the_identifier() -> None:
    world = view(rows={A: state(1, 1, U1), C: state(2, 1, U2, E)},
                 ids={U1: claimed(1, 1, tag(USERS, 1)), U2: claimed(2, 1, tag(USERS, 2)),
                      E: claimed(2, 6, tag(USERS, 2))}, born={1: 1, 2: 1})
    plan = plan_batch([user(1, 4, "e@x.test")], world)
    assert plan.merges == []
    assert plan.identifiers[E] == claimed(2, 6, tag(USERS, 1), tag(USERS, 2))


def test_restated_claims_are_not_rewritten() -> None:
    plan = plan_batch([user(1, 4, "e@x.test", city="Graz")], SALLY)
    assert plan.identifiers == {}
    assert plan.rows[A].claims == (U1, E)


# --- deletes ----------------------------------------------------------------------------------


def test_delete_releases_the_rows_claims_and_withdraws_what_it_supplied() -> None:
    gone = change(USERS, 1, 5, deleted=True)
    plan = plan_batch([gone], SALLY)
    assert plan.rows[A] == RowState(1, False, vk(5), (), None, None, {})
    assert plan.identifiers == {U1: claimed(1, 1, released={tag(USERS, 1): 5}),
                                E: claimed(1, 1, released={tag(USERS, 1): 5})}
    assert plan.withdrawn == {(1, "city"): (vk(5), gone.ref)}
    assert plan.withdrawn_by == {(tag(USERS, 1), (1, "city"))}


def test_delete_of_a_row_the_store_never_saw_leaves_a_tombstone_of_nobody() -> None:
    plan = plan_batch([change(USERS, 1, 5, deleted=True)], view())
    assert plan.rows[A] == RowState(None, False, vk(5), (), None, None, {})
    assert plan.new_profiles == {} and plan.identifiers == {}


def test_row_recreated_after_its_delete_claims_again_for_its_person() -> None:
    plan = plan_batch([change(USERS, 1, 5, deleted=True), user(1, 6, "e@x.test")], SALLY)
    assert profile_of(plan, A) == 1 and plan.new_profiles == {}
    assert plan.identifiers[E] == claimed(1, 6, tag(USERS, 1), released={tag(USERS, 1): 5})


def test_update_to_null_withdraws_the_attribute() -> None:
    nulled = change(USERS, 1, 4, ids=[U1, E], attrs={"city": None}, before={"city": "Lyon"})
    plan = plan_batch([nulled], SALLY)
    assert plan.withdrawn == {(1, "city"): (vk(4), nulled.ref)}
    assert plan.withdrawn_by == {(tag(USERS, 1), (1, "city"))}


def test_withdrawals_of_one_attribute_by_two_rows_keep_the_latest_and_name_both() -> None:
    world = view(rows={A: state(1, 1, U1, E, city=("Lyon", 1)), B: state(1, 1, E, CRM5, city=("Graz", 1))},
                 ids={**SALLY.identifiers, CRM5: claimed(1, 1, tag(CONTACTS, 5))}, born={1: 1})
    late = change(USERS, 1, 6, ids=[U1, E], attrs={"city": None}, before={"city": "Lyon"})
    early = change(CONTACTS, 5, 4, ids=[E, CRM5], attrs={"city": None}, before={"city": "Graz"})
    plan = plan_batch([late, early], world)
    assert plan.withdrawn == {(1, "city"): (vk(6), late.ref)}
    assert plan.withdrawn_by == {(tag(USERS, 1), (1, "city")), (tag(CONTACTS, 5), (1, "city"))}


def test_update_that_keeps_a_value_withdraws_nothing() -> None:
    kept = change(USERS, 1, 4, ids=[U1, E], attrs={"city": "Lyon", "tier": "gold"}, before={"city": "Lyon"})
    plan = plan_batch([kept], SALLY)
    assert plan.withdrawn == {} and plan.withdrawn_by == set()
    assert plan.rows[A].attrs == {"city": ("Lyon", vk(1)), "tier": ("gold", vk(4))}


# --- redelivery and born ----------------------------------------------------------------------


@pytest.mark.parametrize("n", [5, 3], ids=["same", "older"])
def test_event_the_row_already_has_or_older_is_skipped(n: int) -> None:
    world = view(rows={A: state(1, 5, U1, E, city=("Lyon", 5))}, ids=SALLY.identifiers, born={1: 1})
    plan = plan_batch([user(1, n, "f@x.test", city="Graz")], world)
    assert plan.rows == {} and plan.transitions == [] and plan.identifiers == {}
    assert plan.withdrawn == {} and plan.withdrawn_by == set() and plan.new_profiles == {}


def test_event_redelivered_within_one_batch_is_applied_once() -> None:
    first = user(1, 3, "e@x.test", city="Lyon")
    plan = plan_batch([first, first], view())
    assert plan.new_profiles == {-1: vk(3)}
    assert len(plan.transitions) == 1


@st.composite
def batches(draw: st.DrawFn) -> list[RowChange]:
    """Events of three users rows and a CRM contact sharing a few emails, each row's in order."""
    emails = st.sampled_from(["e@x.test", "f@x.test", "g@x.test"])
    changes = []
    for moment in range(1, draw(st.integers(1, 8)) + 1):
        key = draw(st.sampled_from([1, 2, 3, 5]))
        if key == 5:
            changes.append(contact(5, moment, draw(emails), tier=draw(st.sampled_from(["gold", None]))))
        elif draw(st.integers(0, 4)) == 0:
            changes.append(change(USERS, key, moment, deleted=True))
        else:
            city = draw(st.sampled_from(["Lyon", None]))
            changes.append(user(key, moment, draw(st.none() | emails), city=city))
    return changes


@given(batches(), st.data())
def test_redelivered_events_anywhere_in_a_batch_change_nothing(changes: list[RowChange],
                                                               data: st.DataObject) -> None:
    again = data.draw(st.lists(st.sampled_from(changes), max_size=4))
    # A redelivery follows the original: insert each copy somewhere after it.
    redelivered = list(changes)
    for copy in again:
        at = redelivered.index(copy) + 1
        redelivered.insert(data.draw(st.integers(at, len(redelivered))), copy)
    once, twice = plan_batch(changes, SALLY), plan_batch(redelivered, SALLY)
    assert once.rows == twice.rows and once.identifiers == twice.identifiers
    assert once.merges == twice.merges and once.withdrawn == twice.withdrawn
    assert once.withdrawn_by == twice.withdrawn_by and once.transitions == twice.transitions


def test_late_event_older_than_a_profile_moves_its_birth_earlier() -> None:
    world = view(ids={U1: claimed(1, 5, tag(USERS, 1))}, born={1: 5})
    assert plan_batch([order(9, 2, user_id=1)], world).born == {1: vk(2)}


def test_newer_event_leaves_a_profiles_birth() -> None:
    assert plan_batch([change(CONSENTS, 3, 4, owner=by_user(1))], SALLY).born == {}


# --- entities ---------------------------------------------------------------------------------

SALLYS_CART = ("cart", "7")
ITEM = ("cart_item", "70")


def test_entity_child_before_its_parent_belongs_to_nobody_until_the_parent_arrives() -> None:
    plan = plan_batch([item(70, 1, cart_id=7), cart(7, 2, user_id=1)], SALLY)
    assert profile_of(plan, rid(ITEMS, 70)) is None
    assert plan.entities[ITEM] == (None, EntityState(None, SALLYS_CART, {"quantity": 1}, vk(1)))
    assert plan.moved == {SALLYS_CART: 1}  # its children follow it to Sally


def test_entity_child_stored_before_its_parent_is_moved_when_the_parent_arrives() -> None:
    world = view(rows=SALLY.rows, ids=SALLY.identifiers, born={1: 1},
                 entities={ITEM: EntityState(None, SALLYS_CART, {"quantity": 1}, vk(1))})
    plan = plan_batch([cart(7, 2, user_id=1)], world)
    assert plan.moved == {SALLYS_CART: 1}
    assert plan.entities[SALLYS_CART] == (None, EntityState(1, None, {"status": "open"}, vk(2)))


def test_entity_child_after_its_parent_belongs_to_the_parents_owner() -> None:
    world = view(rows=SALLY.rows, ids=SALLY.identifiers, born={1: 1},
                 entities={SALLYS_CART: EntityState(1, None, {"status": "open"}, vk(1))})
    plan = plan_batch([item(70, 2, cart_id=7)], world)
    assert profile_of(plan, rid(ITEMS, 70)) == 1
    assert plan.entities[ITEM][1].profile_id == 1
    assert plan.moved == {}


def test_entity_whose_owner_changes_moves_with_its_children() -> None:
    world = view(ids={**TWO_USERS.identifiers}, born={1: 1, 2: 1},
                 entities={SALLYS_CART: EntityState(1, None, {"status": "open"}, vk(1))})
    plan = plan_batch([cart(7, 3, user_id=2)], world)
    assert plan.moved == {SALLYS_CART: 2}
    assert plan.merges == []


def test_entity_without_children_changing_owner_moves_alone() -> None:
    world = view(ids={**TWO_USERS.identifiers}, born={1: 1, 2: 1},
                 entities={("order", "9"): EntityState(1, None, {"status": "placed"}, vk(1))})
    plan = plan_batch([order(9, 3, user_id=2)], world)
    assert plan.entities[("order", "9")][1].profile_id == 2
    assert plan.moved == {}


def test_entity_update_keeps_the_columns_its_image_left_out() -> None:
    world = view(entities={ITEM: EntityState(1, SALLYS_CART, {"quantity": 1, "price": "2.50"}, vk(1))},
                 born={1: 1})
    plan = plan_batch([item(70, 2, cart_id=7)], world)
    assert plan.entities[ITEM][1].data == {"quantity": 1, "price": "2.50"}


def test_entity_delete_keeps_its_owner_and_parent_as_a_tombstone() -> None:
    world = view(rows={rid(ITEMS, 70): state(1, 1, entity=ITEM)}, born={1: 1},
                 entities={ITEM: EntityState(1, SALLYS_CART, {"quantity": 1}, vk(1))})
    gone = change(ITEMS, 70, 3, deleted=True, tracked=False, entity=EntityChange("cart_item", "70", None))
    plan = plan_batch([gone], world)
    assert plan.entities[ITEM][1] == EntityState(1, SALLYS_CART, None, vk(3))


def test_rows_that_are_just_their_entity_are_listed_untracked() -> None:
    plan = plan_batch([order(9, 2, user_id=1), user(1, 3, "e@x.test")], view())
    assert plan.untracked == {rid(ORDERS, 9)}
    assert set(plan.rows) == {rid(ORDERS, 9), A}


# --- what the store reads ---------------------------------------------------------------------


def test_view_keys_name_tracked_rows_referenced_identifiers_and_entities() -> None:
    changes = [user(1, 1, "e@x.test"), order(9, 2, user_id=2), item(70, 3, cart_id=7)]
    rows, ids, entities = view_keys(changes)
    assert rows == {A}
    assert ids == {U2}  # claims are read once the rows are known: see claim_keys
    assert entities == {("order", "9"), ITEM, SALLYS_CART}


def test_entity_rows_are_the_untracked_rows_state_read_from_their_entity() -> None:
    entities = {("order", "9"): EntityState(4, None, {"status": "placed"}, vk(2))}
    assert entity_rows([order(9, 3, user_id=1), user(1, 3)], entities) == {
        rid(ORDERS, 9): RowState(4, True, vk(2), (), None, ("order", "9"), {})}


def test_claim_keys_are_the_claims_a_row_changed_once_makes_anew_or_releases() -> None:
    world = view(rows={A: state(1, 1, U1, E)}, born={1: 1})
    assert claim_keys([user(1, 2, "f@x.test")], world) == {E, F}


def test_claim_keys_are_every_claim_of_a_row_changed_several_times() -> None:
    world = view(rows={A: state(1, 1, U1, E)}, born={1: 1})
    assert claim_keys([user(1, 2, "f@x.test"), user(1, 3, "e@x.test")], world) == {U1, E, F}


def test_claim_keys_leave_out_identifiers_read_already() -> None:
    world = view(rows={A: state(1, 1, U1, E)}, ids={F: claimed(2, 1, tag(CONTACTS, 5))}, born={1: 1})
    assert claim_keys([user(1, 2, "f@x.test")], world) == {E}


def test_claim_keys_of_a_new_or_deleted_row_are_all_its_claims() -> None:
    world = view(rows={A: state(1, 1, live=False)}, born={1: 1})
    assert claim_keys([user(1, 2, "e@x.test"), user(2, 2, "f@x.test")], world) == {U1, E, U2, F}


def test_claimant_tags_are_other_tables_rows_of_identifiers_claimed_anew() -> None:
    world = view(ids={E: claimed(1, 1, tag(USERS, 1), released={tag(CUSTOMERS, 8): 1}),
                      CRM5: claimed(2, 1, tag(CUSTOMERS, 5))}, born={1: 1, 2: 1})
    assert claimant_tags([contact(5, 2, "e@x.test")], world) == {tag(USERS, 1), tag(CUSTOMERS, 8),
                                                                 tag(CUSTOMERS, 5)}


def test_claimant_tags_skip_what_a_row_changed_once_claimed_already() -> None:
    world = view(rows={B: state(2, 1, E, CRM5)},
                 ids={E: claimed(1, 1, tag(USERS, 1), tag(CONTACTS, 5)),
                      CRM5: claimed(2, 1, tag(CONTACTS, 5))},
                 born={1: 1, 2: 1})
    assert claimant_tags([contact(5, 2, "e@x.test")], world) == set()
