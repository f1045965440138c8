"""Order and duplicates do not matter: any per-partition-ordered interleaving of an event
log, with redeliveries, reaches exactly the state of the in-order run (real Postgres store)."""

from __future__ import annotations

import random
from collections import defaultdict

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdc_sync.adapters import store as store_mod
from cdc_sync.adapters.kafka import RawRecord
from cdc_sync.services.preparer import prepare
from tests import storedb
from tests.workload import Shop, with_offsets

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def config(dsn):
    return storedb.demo_config(store={"dsn": dsn})


def interleave(log: list[RawRecord], rng: random.Random, dup_rate: float) -> list[RawRecord]:
    """Merge the partitions in a random order, keeping each partition's own order, and
    replay a few already-delivered records (at-least-once redelivery)."""
    queues: dict[tuple[str, int], list[RawRecord]] = defaultdict(list)
    for r in log:
        queues[(r.ref.topic, r.ref.partition)].append(r)
    out: list[RawRecord] = []
    heads = {tp: 0 for tp in queues}
    while heads:
        tp = rng.choice(sorted(heads))
        out.append(queues[tp][heads[tp]])
        heads[tp] += 1
        if heads[tp] == len(queues[tp]):
            del heads[tp]
        if out and rng.random() < dup_rate:
            out.append(rng.choice(out))
    return out


def apply_in_batches(config, records: list[RawRecord], rng: random.Random) -> None:
    store = store_mod.ProfileStore(store_mod.connect(config.store.dsn), config.mapping.aggregates)
    try:
        i = 0
        while i < len(records):
            size = rng.randint(1, 40)
            mutations, dead = prepare(records[i:i + size], config.mapping)
            store.apply(mutations, dead)
            i += size
    finally:
        store.conn.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), order_seed=st.integers(0, 2**32 - 1),
       people=st.integers(3, 15), size=st.integers(20, 240), dup_rate=st.sampled_from([0.0, 0.1, 0.3]))
def test_any_partition_ordered_interleaving_with_duplicates_reaches_the_in_order_state(
        config, dsn, seed, order_seed, people, size, dup_rate):
    log = with_offsets(list(Shop(seed=seed, people=people, delete_rate=0.06).events(size)))

    storedb.truncate(dsn)
    apply_in_batches(config, log, random.Random(0))
    expected = storedb.canonical_state(dsn)

    rng = random.Random(order_seed)
    storedb.truncate(dsn)
    apply_in_batches(config, interleave(log, rng, dup_rate), rng)
    assert storedb.canonical_state(dsn) == expected
    assert expected  # the log made people
