"""Where the tests' services come from: the local stack (default), or testcontainers.

`CDC_SYNC_TEST_BACKEND=testcontainers` starts compose/docker-compose.yml's services (the same
images and versions as the local stack; tests/test_compose.py keeps the two in step) through
testcontainers' DockerCompose, on the same host ports, and applies the connectors. It needs a
Docker engine and `pip install '.[docker]'`; without either the stack tests are skipped, with
the reason."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ["postgres", "mariadb", "redis", "kafka", "connect"]


def chosen() -> str:
    return os.environ.get("CDC_SYNC_TEST_BACKEND", "local")


def docker_missing() -> str | None:
    """Why testcontainers cannot run here, or None."""
    host = os.environ.get("DOCKER_HOST", "")
    socket = Path(host.removeprefix("unix://") if host.startswith("unix://") else "/var/run/docker.sock")
    if not host.startswith(("tcp://", "ssh://")) and not socket.exists():
        return (f"CDC_SYNC_TEST_BACKEND=testcontainers needs a Docker engine, and none answers here "
                f"(no socket at {socket}, DOCKER_HOST {host or 'unset'}); "
                "the default backend (the local stack, `make test`) needs none")
    if shutil.which("docker") is None:
        return "CDC_SYNC_TEST_BACKEND=testcontainers needs the docker CLI (compose) on PATH"
    try:
        import testcontainers  # noqa: F401
    except ImportError:
        return "CDC_SYNC_TEST_BACKEND=testcontainers needs testcontainers: pip install '.[docker]'"
    return None


@contextmanager
def containers() -> Iterator[None]:
    """compose/'s services up (waited healthy) for the session, the connectors applied, then down."""
    import base64
    import secrets

    from testcontainers.compose import DockerCompose

    # the cdc-sync services are not started here; give their secret a value all the same
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    os.environ.setdefault("CDC_SYNC_ESP_SECRET", secret)
    compose = DockerCompose(str(ROOT / "compose"), compose_file_name="docker-compose.yml",
                            services=SERVICES, wait=True, pull=True)
    with compose:
        subprocess.run([sys.executable, "-m", "cdc_sync.cli", "connectors", "apply",
                        *map(str, sorted((ROOT / "connectors").glob("*.json")))], check=True, cwd=ROOT)
        yield
