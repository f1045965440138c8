"""Every daemon a test starts ends with the test, passed or failed."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from cdc_sync.services import inspection
from tests import storedb
from tests.stack import daemon
from tests.stack.shop import Shop


@pytest.fixture(autouse=True)
def no_daemon_outlives_its_test() -> Iterator[None]:
    yield
    daemon.kill_leftovers()


@pytest.fixture(scope="module")
def shop():
    """A connection to the shop database, writing as the shop's application does."""
    s = Shop()
    yield s
    s.pg.close()


@pytest.fixture(scope="module")
def dsn():
    """A store database shared by a module's tests (they truncate it as they need)."""
    with storedb.fresh_database() as dsn:
        yield dsn


@pytest.fixture
def running(tmp_path):
    """A daemon on its own store database and consumer group, reading from the beginning."""
    with storedb.fresh_database() as dsn:
        group = f"e2e-{uuid.uuid4().hex[:8]}"
        path = storedb.write_config(tmp_path / "cdc-sync.yaml", store={"dsn": dsn},
                                    kafka={"group_id": group, "max_poll_records": 500})
        proc = daemon.start(path, log=tmp_path / "daemon.log")
        cfg = storedb.demo_config(store={"dsn": dsn}, kafka={"group_id": group})
        yield cfg, group, path
        daemon.wait_for(lambda: daemon.joined(proc), what="the daemon to join before it is stopped")
        assert daemon.stop(proc) == 0, (tmp_path / "daemon.log").read_text()[-3000:]


def profile(cfg, email):
    """The profile holding the email, as `cdc-sync profile show` prints it; None if none does."""
    try:
        return inspection.show(cfg, None, ("email", email))
    except inspection.NotFound:
        return None


def attr(doc, name):
    """An attribute's value; None when the profile or the attribute is missing or deleted."""
    a = None if doc is None else doc["attributes"].get(name)
    return None if a is None or a["deleted"] else a["value"]
