"""stack/stackctl.py: idempotent start, readable one-line failures."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STACKCTL = ROOT / "stack" / "stackctl.py"


def load_stackctl():
    spec = importlib.util.spec_from_file_location("stackctl", STACKCTL)
    module = importlib.util.module_from_spec(spec)
    sys.modules["stackctl"] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def stackctl(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(STACKCTL), *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)


@pytest.mark.stack
def test_stack_up_twice_succeeds_and_keeps_the_same_processes():
    state = ROOT / ".stack" / "run"
    before = {p.name: p.read_text() for p in state.glob("*.pid")}
    first, second = stackctl("up"), stackctl("up")
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert {p.name: p.read_text() for p in state.glob("*.pid")} == before
    assert stackctl("status").returncode == 0


@pytest.mark.stack
def test_port_taken_by_a_stranger_fails_with_one_line_naming_service_and_variable(tmp_path):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        res = stackctl("up", CDC_SYNC_STACK_DIR=str(tmp_path),
                       STACK_LIB_DIR=str(ROOT / ".stack" / "lib"), STACK_PG_PORT=str(port))
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr
    assert f"postgres: port {port} is already taken" in lines[0] and "STACK_PG_PORT" in lines[0]


def test_unreachable_maven_registry_fails_with_one_line(tmp_path):
    # Offline with an empty local repository is what an unreachable Maven Central looks like.
    res = stackctl("jars", STACK_LIB_DIR=str(tmp_path / "lib"),
                   STACK_MAVEN_ARGS=f"-o -Dmaven.repo.local={tmp_path / 'm2'}")
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr
    assert lines[0].startswith("stack: Maven download of kafka jars")


def test_missing_java_is_one_readable_error(tmp_path, monkeypatch):
    stack = load_stackctl()
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(stack.StackError, match="java not found on PATH"):
        stack.ensure_java()


def test_bad_port_variable_is_named():
    res = stackctl("status", STACK_REDIS_PORT="sixty")
    assert res.returncode == 1
    assert res.stderr.strip() == "stack: STACK_REDIS_PORT='sixty' is not a port number"
