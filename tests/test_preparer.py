"""Decode and map in a worker process: the same batches as in the daemon's own process, and a
worker that dies or is signalled loses nothing."""

from __future__ import annotations

import dataclasses
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cdc_sync.adapters.kafka import RawRecord
from cdc_sync.core.events import RecordRef
from cdc_sync.core.mutations import RowChange
from cdc_sync.services.preparer import Preparer, prepare, prepare_batch
from tests import storedb
from tests.workload import Shop, with_offsets


def sample_batch() -> list[RawRecord]:
    shop = Shop(seed=11, people=20)
    records = with_offsets([r for person in range(1, 15) for r in shop.sign_up(person)])
    poison = RawRecord(RecordRef(records[0].ref.topic, 0, 9999), b'{"id": 1}', b"{not json")
    return [*records[:5], poison, *records[5:]]


@pytest.fixture
def batch() -> list[RawRecord]:
    return sample_batch()


@pytest.fixture
def preparer():
    worker = Preparer(storedb.demo_config().mapping)
    yield worker
    worker.close()


def test_the_worker_prepares_what_the_daemon_would(batch, preparer):
    changes, dead, times = preparer(batch)
    expected_changes, expected_dead, expected_times = prepare_batch(batch, preparer.mapping)
    assert times == expected_times and times.partitions
    assert changes == expected_changes and len(changes) > 10
    assert dead == expected_dead and [d.ref.offset for d in dead] == [9999]
    assert len(preparer.worker_pids()) == 1 and preparer.worker_pids()[0] != os.getpid()


def test_a_killed_worker_loses_no_batch_and_is_replaced(batch, preparer):
    expected = prepare_batch(batch, preparer.mapping)
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
    assert preparer(batch) == prepare_batch(batch, preparer.mapping)
    assert preparer.worker_pids() == [pid]


def test_in_process_preparing_starts_no_worker(batch):
    local = Preparer(storedb.demo_config().mapping, in_process=True)
    assert local(batch) == prepare_batch(batch, local.mapping)
    assert local.worker_pids() == []


def test_a_row_change_pickles_with_every_field_in_order(batch):
    """The worker sends RowChanges by their own __reduce__: a field added or moved later must
    be in it, in the constructor's order."""
    changes, _ = prepare(batch, storedb.demo_config().mapping)
    distinct = dataclasses.replace(changes[0], deleted=True, tracked=False, partial=True, before={"x": 1})
    for change in (*changes, distinct):
        assert change.__reduce__()[1] == tuple(getattr(change, f.name) for f in dataclasses.fields(RowChange))
    assert [pickle.loads(pickle.dumps(c)) for c in (*changes, distinct)] == [*changes, distinct]


def test_the_worker_ends_when_the_daemon_is_killed(tmp_path):
    """A daemon killed with SIGKILL cannot stop its worker: the worker notices and exits, so
    nothing is left running that ignores SIGTERM (systemd would wait for it)."""
    script = tmp_path / "daemon.py"
    script.write_text(
        "import sys, time\n"
        f"sys.path.insert(0, {str(storedb.ROOT)!r})\n"
        "from tests import storedb\n"
        "from tests.test_preparer import sample_batch\n"
        "from cdc_sync.services.preparer import prepare_batch, Preparer\n"
        "if __name__ == '__main__':\n"
        "    worker = Preparer(storedb.demo_config().mapping)\n"
        "    worker(sample_batch())\n"
        "    print(worker.worker_pids()[0], flush=True)\n"
        "    time.sleep(60)\n")
    daemon = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert daemon.stdout is not None
        worker = int(daemon.stdout.readline())
        daemon.kill()
        daemon.wait(timeout=10)
        deadline = time.monotonic() + 10
        while _running(worker) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _running(worker)
    finally:
        daemon.kill()


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited (its parent, the test runner's init, reaps it)


def test_workers_that_keep_failing_leave_the_daemon_preparing_alone(batch, monkeypatch):
    worker = Preparer(storedb.demo_config().mapping)
    monkeypatch.setattr("cdc_sync.services.preparer._prepare_in_worker", _fail)
    try:
        for _ in range(Preparer.max_failures):
            assert worker(batch) == prepare_batch(batch, worker.mapping)  # nothing lost meanwhile
        assert worker.in_process and worker.worker_pids() == []
    finally:
        worker.close()


def _fail(records: object) -> None:
    raise RuntimeError("a worker that cannot prepare")
