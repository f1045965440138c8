"""Version: the order of facts, and its text key whose string order must be that order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdc_sync.core.mutations import Version, commit_key, commit_time

U64_MAX = 2**64 - 1

# Realistic values: microsecond commit times, 64-bit LSNs and binlog offsets, the
# priority range the mapping allows, and source names as connectors' topic prefixes.
# Magnitudes are drawn first so that numbers of every width meet; small values make ties common.


def up_to_bits(bits: int) -> st.SearchStrategy[int]:
    """Integers of every magnitude up to 2**bits, each bit length equally likely."""
    return st.integers(0, bits).flatmap(lambda n: st.integers(0, 2**n))


def powers_of_two(bits: int) -> st.SearchStrategy[int]:
    """2**n and its neighbours: where a number gains a digit."""
    return st.integers(1, bits).flatmap(lambda n: st.sampled_from([2**n - 1, 2**n, 2**n + 1]))


commit_times = st.integers(0, 3) | up_to_bits(62) | powers_of_two(62)
position_parts = st.integers(0, 3) | up_to_bits(63) | powers_of_two(63)
priorities = st.integers(0, 2) | up_to_bits(16).map(lambda n: min(n, 0xFFFF))
# Names of [A-Za-z0-9_] only: their key order is their text order (see the '-'/'.' test below).
sources = st.sampled_from(["shop", "crm", "erp", "shop_eu", "crm2", "a"])
any_sources = st.from_regex(r"[A-Za-z0-9_.-]{1,8}", fullmatch=True)
# Snapshot tiebreaks are "<schema.table>|<row key json>"; a row key may hold '/' or anything.
tiebreaks = st.sampled_from(["", 'public.users|{"id":1}', 'public.users|{"id":2}',
                             'crm.contacts|{"id":"a/b"}']) | st.text(max_size=8)
# One source has one position shape: Postgres (last commit LSN, LSN); binlog (file, pos, row).
SHAPE = {"shop": 2, "crm": 3, "erp": 2, "shop_eu": 3, "crm2": 2, "a": 3}


def order(v: Version) -> tuple[int, int, str, tuple[int, ...], str]:
    """The version order as documented, computed from the fields, never from the key."""
    return (v.commit_us, v.priority, v.source, v.position, v.tiebreak)


@st.composite
def versions(draw: st.DrawFn, source: str | None = None) -> Version:
    source = source if source is not None else draw(sources)
    position = draw(st.tuples(*[position_parts] * SHAPE.get(source, 2)))
    return Version(draw(commit_times), draw(priorities), source, position, draw(tiebreaks))


def near(draw: st.DrawFn, n: int, top: int = U64_MAX) -> int:
    return draw(st.sampled_from([n, min(n + 1, top), max(n - 1, 0)]))


@st.composite
def close_pairs(draw: st.DrawFn) -> tuple[Version, Version]:
    """Two versions, often of one source, sharing long prefixes of their fields, or equal."""
    a = draw(versions())
    if draw(st.booleans()):
        return a, draw(versions(source=a.source if draw(st.booleans()) else None))
    b = Version(
        near(draw, a.commit_us),
        near(draw, a.priority, 0xFFFF),
        a.source if draw(st.integers(0, 3)) else draw(sources),
        tuple(near(draw, p) for p in a.position),
        a.tiebreak if draw(st.booleans()) else draw(tiebreaks),
    )
    if len(b.position) != SHAPE[b.source]:
        b = Version(b.commit_us, b.priority, b.source, a.position[:1] * SHAPE[b.source], b.tiebreak)
    return a, b


@given(versions())
def test_from_key_reads_back_the_version_it_was_made_from(v: Version) -> None:
    assert Version.from_key(v.key()) == v


@settings(max_examples=500)
@given(close_pairs())
def test_key_order_is_commit_time_priority_source_position_tiebreak_order(
        pair: tuple[Version, Version]) -> None:
    a, b = pair
    assert (a.key() < b.key()) == (order(a) < order(b))
    assert (a.key() == b.key()) == (a == b) == (order(a) == order(b))


@settings(max_examples=300)
@given(close_pairs())
def test_comparison_operators_agree_with_the_key(pair: tuple[Version, Version]) -> None:
    a, b = pair
    assert (a < b) == (a.key() < b.key())
    assert (a <= b) == (a.key() <= b.key())


@given(st.lists(versions(), max_size=20))
def test_sorting_keys_sorts_versions(vs: list[Version]) -> None:
    assert [Version.from_key(k) for k in sorted(v.key() for v in vs)] == sorted(vs, key=order)


@given(st.lists(any_sources, min_size=2, max_size=2, unique=True), commit_times, priorities,
       st.lists(st.tuples(position_parts, position_parts, position_parts), min_size=4, max_size=4),
       st.sampled_from([2, 3]), tiebreaks)
def test_source_decides_before_position_so_positions_of_two_sources_are_never_compared(
        names: list[str], commit: int, priority: int, positions: list[tuple[int, ...]], shape: int,
        tiebreak: str) -> None:
    # Any names the mapping accepts, including ones extending another's with '-' or '.'.
    a, b = names
    p1, p2, q1, q2 = (p[:shape] for p in positions)
    first = Version(commit, priority, a, p1, tiebreak) < Version(commit, priority, b, q1)
    assert (Version(commit, priority, a, p2) < Version(commit, priority, b, q2, tiebreak)) == first


@given(st.sampled_from(["shop", "crm"]), st.tuples(position_parts, position_parts), commit_times)
def test_keys_of_one_source_and_position_shape_have_one_length(
        source: str, position: tuple[int, int], commit: int) -> None:
    assert len(Version(commit, 2, source, position).key()) == len(Version(0, 0, source, (0, 0)).key())


@pytest.mark.parametrize(("smaller", "larger"), [
    (Version(0, 0, "shop", (0, U64_MAX - 1)), Version(0, 0, "shop", (0, U64_MAX))),
    (Version(U64_MAX - 1, 0, "shop", (0, 0)), Version(U64_MAX, 0, "shop", (0, 0))),
    (Version(5, 0xFFFE, "shop", (1, 2)), Version(5, 0xFFFF, "shop", (1, 2))),
    (Version(5, 2, "crm", (1, 2)), Version(5, 2, "shop", (1, 2))),
    (Version(5, 2, "shop", (U64_MAX, 0)), Version(6, 0, "shop", (0, 0))),
    (Version(5, 2, "shop", (U64_MAX, U64_MAX)), Version(5, 3, "shop", (0, 0))),
    (Version(5, 2, "shop", (9, 9)), Version(5, 2, "shop", (9, 9), 'public.users|{"id":1}')),
    (Version(5, 2, "shop", (9, 9), 'public.users|{"id":1}'),
     Version(5, 2, "shop", (9, 9), 'public.users|{"id":2}')),
    (Version(5, 2, "shop", (9, 9), "~" * 20), Version(5, 2, "shop", (9, 10))),
], ids=["largest-lsn", "largest-commit-time", "largest-priority", "source-breaks-ties",
        "commit-time-before-position", "priority-before-position", "no-tiebreak-first",
        "tiebreak-orders-snapshot-rows", "position-before-tiebreak"])
def test_key_order_holds_at_the_edges_of_each_field(smaller: Version, larger: Version) -> None:
    assert smaller < larger
    assert smaller.key() < larger.key()


def test_older_commit_of_a_higher_priority_source_is_still_older() -> None:
    assert Version(100, 0xFFFF, "shop", (U64_MAX, U64_MAX)) < Version(101, 0, "crm", (0, 0, 0))


def test_key_spells_commit_time_priority_source_position_and_tiebreak() -> None:
    v = Version(1_748_855_647_318_422, 2, "shop", (27114392, 27114680), 'public.users|{"id":1}')
    assert v.key() == ('000636932f9f3196/0002/shop/00000000019dbb98.00000000019dbcb8/'
                       'public.users|{"id":1}')


@pytest.mark.parametrize("v", [
    Version(7, 1, "shop", ()),
    Version(7, 1, "shop", (1, 2), "a/b/c"),
    Version(7, 1, "shop", (1, 2, 3), ""),
], ids=["empty-position", "tiebreak-with-slashes", "binlog-position"])
def test_from_key_round_trips_the_unusual_shapes(v: Version) -> None:
    assert Version.from_key(v.key()) == v


def test_equal_fields_are_one_fact() -> None:
    a = Version(7, 1, "shop", (1, 2), "t")
    assert a == Version(7, 1, "shop", (1, 2), "t") and not a < Version(7, 1, "shop", (1, 2), "t")


@given(st.integers(0, 253_402_300_799_999_999))  # up to the last microsecond of year 9999
def test_commit_time_reads_the_commit_time_a_key_starts_with(commit: int) -> None:
    got = commit_time(Version(commit, 2, "shop", (1, 2), "x").key())
    assert got.tzinfo is UTC
    assert (got - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) == commit


@given(versions(), versions())
def test_commit_key_sorts_before_every_version_of_its_commit_time_and_after_earlier_ones(
        a: Version, b: Version) -> None:
    bound = commit_key(a.commit_us)
    assert bound <= a.key()
    assert (b.key() < bound) == (b.commit_us < a.commit_us)

