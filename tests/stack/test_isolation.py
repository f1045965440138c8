"""One bad record never stops the stream: whatever a record raises while it is applied, it is
dead-lettered with its reason and the records around it are applied (real store)."""

from __future__ import annotations

import dataclasses

import psycopg
import pytest

from cdc_sync.services.preparer import prepare
from cdc_sync.services.sync import Consumer
from tests import storedb
from tests.workload import Shop, with_offsets

pytestmark = pytest.mark.stack


def test_a_record_the_store_serialiser_cannot_write_is_dead_lettered_and_the_rest_applied():
    shop = Shop(seed=3, people=10)
    records = with_offsets([r for person in range(1, 7) for r in shop.sign_up(person)])
    with storedb.fresh_database() as dsn:
        cfg = storedb.demo_config(store={"dsn": dsn})
        changes, dead = prepare(records, cfg.mapping)
        # A value no mapping should let through (wider than 64 bits): the JSON serialiser the
        # store uses raises TypeError, not a database error.
        bad = changes[3]
        changes[3] = dataclasses.replace(bad, attributes={**bad.attributes, "city": 2**70})
        daemon = Consumer(cfg)
        try:
            result = daemon._apply_isolating(records, changes, dead)
        finally:
            daemon._applier.shutdown()
            if daemon._store is not None:
                daemon._store.conn.close()
        with psycopg.connect(dsn) as conn:
            letters = conn.execute("SELECT kafka_offset, error, reason FROM dead_letters").fetchall()
            people = conn.execute("SELECT count(*) FROM identifiers WHERE type = 'user_id' AND live"
                                  ).fetchone()[0]
    assert result.dead_letters == 1
    assert [(o, e) for o, e, _ in letters] == [(bad.ref.offset, "TypeError")]
    assert "TypeError while applying" in letters[0][2]
    assert people == 5  # every other user was applied
