"""Source rows: what each row supplies after a change, each value with the version of its last
real change (next_attrs), and the JSON equality that decides what a change is."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cdc_sync.core.events import RecordRef
from cdc_sync.core.mutations import RowChange, Version
from cdc_sync.core.rows import UNKNOWN_CHANGE, RowState, Supply, next_attrs, row_tag, same_json, tag_table

USERS = "shop:public.users"


def version(n: int) -> Version:
    """The n-th event of the shop source: larger n, later commit."""
    return Version(1_748_855_647_000_000 + n, 2, "shop", (0, 27_000_000 + n))


def v(n: int) -> str:
    return version(n).key()


def change(n: int, attributes: Mapping[str, Any] | None = None, *, before: Mapping[str, Any] | None = None,
           partial: bool = False, deleted: bool = False) -> RowChange:
    """An event at version n about users row 1."""
    return RowChange(ref=RecordRef("shop.public.users", 0, n), table=USERS, row_key='{"id":1}',
                     version=version(n), deleted=deleted,
                     identifiers=() if deleted else (("user_id", "1"),),
                     attributes=attributes or {}, before=before, partial=partial)


def stored(attrs: Mapping[str, Supply], *, live: bool = True, n: int = 1) -> RowState:
    return RowState(1, live, v(n), (("user_id", "1"),), None, None, attrs)


# --- insert -----------------------------------------------------------------------------------


def test_insert_supplies_every_non_null_value_at_its_version() -> None:
    assert next_attrs(change(1, {"city": "Lyon", "points": 0, "vip": False}), None) == {
        "city": ("Lyon", v(1)), "points": (0, v(1)), "vip": (False, v(1))}


def test_insert_with_null_asserts_nothing_for_that_attribute() -> None:
    assert next_attrs(change(1, {"city": None, "name": "Ann"}), None) == {"name": ("Ann", v(1))}


def test_insert_over_a_deleted_row_is_a_new_change_even_for_the_same_value() -> None:
    dead = stored({"city": ("Lyon", v(1))}, live=False, n=2)
    assert next_attrs(change(3, {"city": "Lyon"}), dead) == {"city": ("Lyon", v(3))}


# --- update -----------------------------------------------------------------------------------


def test_update_changes_only_the_changed_columns_and_keeps_old_versions_for_the_rest() -> None:
    old = stored({"city": ("Lyon", v(1)), "name": ("Ann", v(1))})
    update = change(2, {"city": "Graz", "name": "Ann"}, before={"city": "Lyon", "name": "Ann"})
    assert next_attrs(update, old) == {"city": ("Graz", v(2)), "name": ("Ann", v(1))}


@pytest.mark.parametrize("before", [{}, None], ids=["key-only", "absent"])
@pytest.mark.parametrize(("after", "expected"), [
    ("Lyon", ("Lyon", v(1))),
    ("Graz", ("Graz", v(2))),
], ids=["unchanged", "changed"])
def test_update_without_the_column_in_its_before_image_compares_with_the_stored_state(
        before: dict[str, Any] | None, after: str, expected: Supply) -> None:
    old = stored({"city": ("Lyon", v(1))})
    assert next_attrs(change(2, {"city": after}, before=before), old)["city"] == expected


def test_update_setting_a_value_the_row_did_not_supply_is_a_change() -> None:
    old = stored({})
    assert next_attrs(change(2, {"city": "Lyon"}, before={}), old) == {"city": ("Lyon", v(2))}


def test_update_to_null_withdraws_the_value() -> None:
    old = stored({"city": ("Lyon", v(1)), "name": ("Ann", v(1))})
    update = change(2, {"city": None, "name": "Ann"}, before={"city": "Lyon", "name": "Ann"})
    assert next_attrs(update, old) == {"name": ("Ann", v(1))}


def test_update_of_a_row_first_seen_with_an_unchanged_value_has_an_unknown_change_time() -> None:
    update = change(2, {"city": "Lyon"}, before={"city": "Lyon"})
    assert next_attrs(update, None) == {"city": ("Lyon", UNKNOWN_CHANGE)}


def test_unknown_change_time_is_older_than_any_version() -> None:
    assert UNKNOWN_CHANGE < v(0) < v(1)


def test_update_whose_before_image_disagrees_with_the_store_but_not_the_after_is_of_unknown_time() -> None:
    # The store saw Lyon; the event says Graz -> Graz: a change the store missed, time unknown.
    old = stored({"city": ("Lyon", v(1))})
    assert next_attrs(change(3, {"city": "Graz"}, before={"city": "Graz"}), old) == {
        "city": ("Graz", UNKNOWN_CHANGE)}


def test_before_image_wins_over_the_stored_state_when_it_carries_the_column() -> None:
    old = stored({"city": ("Lyon", v(1))})
    assert next_attrs(change(3, {"city": "Lyon"}, before={"city": "Graz"}), old) == {"city": ("Lyon", v(3))}


@pytest.mark.parametrize(("was", "now"), [(1, True), (True, 1), (1, 1.0), (0, False), ("1", 1),
                                          ({"a": 1}, {"a": True}), ([1], [1.0])])
def test_a_json_type_change_is_a_change_even_when_python_calls_the_values_equal(was: Any, now: Any) -> None:
    old = stored({"x": (was, v(1))})
    assert next_attrs(change(2, {"x": now}, before={"x": was}), old) == {"x": (now, v(2))}


def test_update_that_names_an_attribute_no_more_withdraws_it() -> None:
    # A templated name changed (consent_email -> consent_sms): the old name is not in the image.
    old = stored({"consent_email": (True, v(1))})
    update = change(2, {"consent_sms": True}, before={"consent_email": True})
    assert next_attrs(update, old) == {"consent_sms": (True, v(2))}


def test_partial_update_keeps_the_attributes_its_image_does_not_carry() -> None:
    old = stored({"bio": ("long text", v(1)), "city": ("Lyon", v(1))})
    update = change(2, {"city": "Graz"}, before={"city": "Lyon"}, partial=True)
    assert next_attrs(update, old) == {"bio": ("long text", v(1)), "city": ("Graz", v(2))}


def test_partial_update_still_withdraws_what_it_sets_to_null() -> None:
    old = stored({"bio": ("long text", v(1)), "city": ("Lyon", v(1))})
    assert next_attrs(change(2, {"city": None}, partial=True), old) == {"bio": ("long text", v(1))}


def test_partial_update_of_a_deleted_row_keeps_nothing_of_it() -> None:
    dead = stored({"bio": ("long text", v(1))}, live=False)
    assert next_attrs(change(3, {"city": "Graz"}, partial=True), dead) == {"city": ("Graz", v(3))}


# --- delete -----------------------------------------------------------------------------------


def test_delete_withdraws_everything() -> None:
    old = stored({"city": ("Lyon", v(1)), "name": ("Ann", v(1))})
    assert next_attrs(change(2, deleted=True), old) == {}


# --- properties -------------------------------------------------------------------------------

VALUES = st.none() | st.booleans() | st.integers(-2, 2) | st.sampled_from(["Lyon", "Graz"])
ATTRS = st.dictionaries(st.sampled_from(["a", "b", "c"]), VALUES, max_size=3)


@given(ATTRS, ATTRS, st.booleans())
def test_next_attrs_supplies_exactly_the_non_null_values_of_a_whole_image(
        first: dict[str, Any], second: dict[str, Any], carry_before: bool) -> None:
    old = RowState(1, True, v(1), (), None, None, next_attrs(change(1, first), None))
    after = next_attrs(change(2, second, before=first if carry_before else None), old)
    assert {k: value for k, (value, _) in after.items()} == {k: x for k, x in second.items() if x is not None}


@given(ATTRS, ATTRS, st.booleans())
def test_next_attrs_versions_a_value_anew_exactly_when_it_changed(
        first: dict[str, Any], second: dict[str, Any], carry_before: bool) -> None:
    old = RowState(1, True, v(1), (), None, None, next_attrs(change(1, first), None))
    after = next_attrs(change(2, second, before=first if carry_before else None), old)
    for name, (value, at) in after.items():
        unchanged = name in first and same_json(first[name], value)
        assert at == (v(1) if unchanged else v(2))


# --- tags and equality ------------------------------------------------------------------------


def test_row_tag_is_table_space_row_key_and_tag_table_reads_the_table_back() -> None:
    tag = row_tag((USERS, '{"id":"a b"}'))
    assert tag == 'shop:public.users {"id":"a b"}'
    assert tag_table(tag) == USERS


@pytest.mark.parametrize(("a", "b", "same"), [
    ({"a": [1, "x"]}, {"a": [1, "x"]}, True),
    ({"a": 1, "b": 2}, {"b": 2, "a": 1}, True),
    ({"a": 1}, {"a": 1, "b": None}, False),
    ([1, 2], [2, 1], False),
    ([1], [1, 1], False),
    (None, None, True),
    (1.5, 1.5, True),
])
def test_same_json_compares_as_json_values(a: Any, b: Any, same: bool) -> None:
    assert same_json(a, b) is same
