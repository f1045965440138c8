"""Decode and map in a worker process: the same batches as in the daemon's own process, and a
worker that dies or is signalled loses nothing."""

from __future__ import annotations

import dataclasses
import os
import pickle
import signal
import time

import pytest

from cdc_sync.adapters.kafka import RawRecord
from cdc_sync.core.events import RecordRef
from cdc_sync.core.mutations import RowChange
from cdc_sync.services.preparer import Preparer, prepare
from tests import storedb
from tests.stack.test_reconcile_property import with_offsets
from tests.workload import Shop


@pytest.fixture
def batch() -> list[RawRecord]:
    shop = Shop(seed=11, people=20)
    records = with_offsets([r for person in range(1, 15) for r in shop.sign_up(person)])
    poison = RawRecord(RecordRef(records[0].ref.topic, 0, 9999), b'{"id": 1}', b"{not json")
    return [*records[:5], poison, *records[5:]]


@pytest.fixture
def preparer():
    worker = Preparer(storedb.demo_config().mapping)
    yield worker
    worker.close()


def test_the_worker_prepares_what_the_daemon_would(batch, preparer):
    changes, dead = preparer(batch)
    expected_changes, expected_dead = prepare(batch, preparer.mapping)
    assert changes == expected_changes and len(changes) > 10
    assert dead == expected_dead and [d.ref.offset for d in dead] == [9999]
    assert len(preparer.worker_pids()) == 1 and preparer.worker_pids()[0] != os.getpid()


def test_a_killed_worker_loses_no_batch_and_is_replaced(batch, preparer):
    expected = prepare(batch, preparer.mapping)
    assert preparer(batch) == expected
    [first] = preparer.worker_pids()
    os.kill(first, signal.SIGKILL)
    time.sleep(0.2)
    assert preparer(batch) == expected  # prepared in the daemon while the worker is replaced
    assert preparer(batch) == expected
    [second] = preparer.worker_pids()
    assert second != first


def test_the_worker_leaves_sigterm_to_the_daemon(batch, preparer):
    """systemd and Kubernetes signal the whole process group: the daemon finishes the batch
    in hand, so the worker must still be there to prepare it."""
    assert preparer(batch)
    [pid] = preparer.worker_pids()
    os.kill(pid, signal.SIGTERM)
    os.kill(pid, signal.SIGINT)
    time.sleep(0.2)
    assert preparer(batch) == prepare(batch, preparer.mapping)
    assert preparer.worker_pids() == [pid]


def test_in_process_preparing_starts_no_worker(batch):
    local = Preparer(storedb.demo_config().mapping, in_process=True)
    assert local(batch) == prepare(batch, local.mapping)
    assert local.worker_pids() == []


def test_a_row_change_pickles_with_every_field(batch):
    """The worker sends RowChanges by their own __reduce__: a field added later must be in it."""
    changes, _ = prepare(batch, storedb.demo_config().mapping)
    assert len(changes[0].__reduce__()[1]) == len(dataclasses.fields(RowChange))
    assert [pickle.loads(pickle.dumps(c)) for c in changes] == changes
