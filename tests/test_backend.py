"""The testcontainers backend says why it cannot run where there is no Docker engine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_without_docker_the_testcontainers_backend_skips_the_stack_tests_saying_why(tmp_path):
    env = {**os.environ, "CDC_SYNC_TEST_BACKEND": "testcontainers",
           "DOCKER_HOST": f"unix://{tmp_path}/none.sock"}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                          "tests/stack/test_end_offsets.py", "tests/test_deploy.py"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-2000:]
    assert "skipped" in run.stdout and "needs a Docker engine" in run.stdout, run.stdout[-2000:]
    assert "6 passed, 3 skipped" in run.stdout  # the unit tests still run
