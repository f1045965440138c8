"""Every daemon a test starts ends with the test, passed or failed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.stack import daemon


@pytest.fixture(autouse=True)
def no_daemon_outlives_its_test() -> Iterator[None]:
    yield
    daemon.kill_leftovers()
