"""Version: the order of facts, and its text key whose string order must be that order."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from cdc_sync.core.mutations import Version

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
sources = st.sampled_from(["shop", "crm", "erp", "shop_eu", "shop-eu", "crm2"])
wal_positions = st.tuples(position_parts, position_parts)  # Postgres: (last commit LSN, LSN)
binlog_positions = st.tuples(position_parts, position_parts, position_parts)  # (file, pos, row)


def order(v: Version) -> tuple[int, tuple[int, ...], int, str]:
    return (v.commit_us, v.position, v.priority, v.source)


@st.composite
def versions(draw: st.DrawFn, length: int | None = None, source: str | None = None) -> Version:
    if length is None:
        length = draw(st.sampled_from([2, 3]))
    position = draw(wal_positions if length == 2 else binlog_positions)
    return Version(draw(commit_times), position, draw(priorities),
                   source if source is not None else draw(sources))


@st.composite
def same_shape_pairs(draw: st.DrawFn) -> tuple[Version, Version]:
    """Two versions of one source: the comparison every reconcile decision makes."""
    source = draw(sources)
    length = draw(st.sampled_from([2, 3]))
    a = draw(versions(length, source))
    # Half the time, derive b from a so that long shared prefixes and equality occur.
    if draw(st.booleans()):
        return a, draw(versions(length, source))
    b = Version(
        draw(st.sampled_from([a.commit_us, a.commit_us + 1, max(a.commit_us - 1, 0)])),
        tuple(draw(st.sampled_from([p, p + 1, max(p - 1, 0)])) for p in a.position),
        draw(st.sampled_from([a.priority, min(a.priority + 1, 0xFFFF), max(a.priority - 1, 0)])),
        source,
    )
    return a, b


@given(versions())
def test_from_key_reads_back_the_version_it_was_made_from(v: Version) -> None:
    assert Version.from_key(v.key()) == v


@settings(max_examples=500)
@given(same_shape_pairs())
def test_key_order_is_version_order_within_one_source(pair: tuple[Version, Version]) -> None:
    a, b = pair
    assert (a.key() < b.key()) == (order(a) < order(b))
    assert (a.key() == b.key()) == (a == b)


@given(st.sampled_from([2, 3]).flatmap(lambda n: st.tuples(versions(n), versions(n))))
def test_key_order_is_version_order_across_sources_with_one_position_shape(
        pair: tuple[Version, Version]) -> None:
    a, b = pair
    assert (a.key() < b.key()) == (a < b)


@given(versions(2), versions(3))
def test_key_order_is_version_order_across_position_shapes_unless_one_extends_the_other(
        a: Version, b: Version) -> None:
    # (x, y) < (x, y, z) as tuples, but its key sorts after: '/' > '.'. Reachable only by
    # two sources with equal commit times whose positions share a prefix; see the report.
    assume(not (a.commit_us == b.commit_us and b.position[:2] == a.position))
    assert (a.key() < b.key()) == (a < b)
    assert (b.key() < a.key()) == (b < a)


@given(st.lists(versions(source="shop", length=2), max_size=20))
def test_sorting_keys_sorts_versions_of_one_source(vs: list[Version]) -> None:
    assert [Version.from_key(k) for k in sorted(v.key() for v in vs)] == sorted(vs)


@given(same_shape_pairs())
def test_keys_of_one_source_and_position_shape_have_one_length(pair: tuple[Version, Version]) -> None:
    a, b = pair
    assert len(a.key()) == len(b.key())


@pytest.mark.parametrize(("smaller", "larger"), [
    (Version(0, (0, U64_MAX - 1), 0, "shop"), Version(0, (0, U64_MAX), 0, "shop")),
    (Version(U64_MAX - 1, (0, 0), 0, "shop"), Version(U64_MAX, (0, 0), 0, "shop")),
    (Version(5, (1, 2), 0xFFFE, "shop"), Version(5, (1, 2), 0xFFFF, "shop")),
    (Version(5, (1, 2), 2, "crm"), Version(5, (1, 2), 2, "shop")),
    (Version(5, (U64_MAX, 0), 2, "shop"), Version(6, (0, 0), 0, "shop")),
], ids=["largest-lsn", "largest-commit-time", "largest-priority", "source-breaks-ties",
        "commit-time-before-position"])
def test_key_order_holds_at_the_edges_of_each_field(smaller: Version, larger: Version) -> None:
    assert smaller < larger
    assert smaller.key() < larger.key()


def test_key_spells_commit_time_position_priority_and_source() -> None:
    v = Version(1_748_855_647_318_422, (27114392, 27114680), 2, "shop")
    assert v.key() == "000636932f9f3196/00000000019dbb98.00000000019dbcb8/0002/shop"


def test_from_key_reads_an_empty_position() -> None:
    assert Version.from_key(Version(7, (), 1, "shop").key()) == Version(7, (), 1, "shop")
