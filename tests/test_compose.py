"""The Docker Compose stack (compose/) stays in step with the local stack (stack/).

Static checks of the files only: no Docker engine is needed.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_DIR = ROOT / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
CONNECT_DOCKERFILE = COMPOSE_DIR / "connect" / "Dockerfile"
CONNECT_PROPERTIES = COMPOSE_DIR / "connect" / "connect-distributed.properties"
COMPOSE_README = COMPOSE_DIR / "README.md"
STACK_DIR = ROOT / "stack"
MAVEN_DIR = STACK_DIR / "maven"
STACKCTL = STACK_DIR / "stackctl.py"
POM_NS = {"m": "http://maven.apache.org/POM/4.0.0"}

# The local stack runs Debian's packages of these; Kafka's tag comes from its pom.
DEBIAN_PACKAGE_IMAGES = {"postgres": "postgres:15", "mariadb": "mariadb:10.11", "redis": "redis:7"}
# Compose adds a listener for other containers; every other broker setting matches.
BROKER_SETTINGS_THAT_DIFFER = {"listener.security.protocol.map"}


@cache
def services() -> dict[str, Any]:
    compose = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    return dict(compose["services"])


@cache
def dockerfile() -> str:
    return CONNECT_DOCKERFILE.read_text(encoding="utf-8")


@cache
def kafka_version() -> str:
    pom = ET.parse(MAVEN_DIR / "kafka" / "pom.xml")
    version = pom.findtext("m:properties/m:kafka.version", namespaces=POM_NS)
    assert version, "stack/maven/kafka/pom.xml has no <kafka.version> property"
    return version.strip()


@cache
def debezium_versions() -> dict[str, str]:
    """Plugin folder name (e.g. debezium-postgres) -> its io.debezium artifact's version."""
    versions = {}
    for pom in sorted(MAVEN_DIR.glob("debezium-*/pom.xml")):
        for dependency in ET.parse(pom).iterfind("m:dependencies/m:dependency", POM_NS):
            if dependency.findtext("m:groupId", namespaces=POM_NS) == "io.debezium":
                versions[pom.parent.name] = dependency.findtext("m:version", namespaces=POM_NS)
    assert versions, f"no Debezium poms under {MAVEN_DIR}"
    return versions


@cache
def stackctl() -> Any:
    """stack/stackctl.py as a module (standard library only)."""
    assert STACKCTL.is_file(), f"{STACKCTL} is missing: the local stack's settings live there"
    spec = importlib.util.spec_from_file_location("stackctl", STACKCTL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


def local_default_ports() -> dict[str, int]:
    """DEFAULT_PORTS of the local stack."""
    return dict(stackctl().DEFAULT_PORTS)


def properties(path: Path) -> dict[str, str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    pairs = [line.split("=", 1) for line in lines if line.strip() and not line.startswith("#")]
    return {key.strip(): value.strip() for key, value in pairs}


def fixed_settings(path: Path) -> dict[str, str]:
    """The settings of a stack/conf template that stackctl.py does not fill in ({port} etc.)."""
    return {key: value for key, value in properties(path).items() if "{" not in value}


def kafka_image_env_name(key: str) -> str:
    """A broker property as the apache/kafka image's environment variable."""
    return "KAFKA_" + key.replace("_", "__").replace("-", "___").replace(".", "_").upper()


def host_ports(service: dict[str, Any]) -> list[int]:
    """Host side of short-syntax port mappings ("5432:5432", "127.0.0.1:5432:5432")."""
    return [int(str(mapping).rsplit(":", 2)[-2]) for mapping in service.get("ports", [])]


def final_base_image(text: str) -> str:
    """The last FROM of a Dockerfile, with ${ARG} references replaced by their defaults."""
    defaults = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", text, re.MULTILINE))
    image = re.findall(r"^FROM\s+(\S+)", text, re.MULTILINE)[-1]
    return re.sub(r"\$\{(\w+)\}", lambda match: defaults[match.group(1)], image)


def strings_in(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict | list):
        for item in value.values() if isinstance(value, dict) else value:
            yield from strings_in(item)


@pytest.mark.parametrize(("service", "image"), sorted(DEBIAN_PACKAGE_IMAGES.items()))
def test_database_image_has_the_local_stack_version(service: str, image: str) -> None:
    assert services()[service]["image"] == image


def test_kafka_image_has_the_pom_kafka_version() -> None:
    assert services()["kafka"]["image"] == f"apache/kafka:{kafka_version()}"


def test_connect_base_image_has_the_pom_kafka_version() -> None:
    assert final_base_image(dockerfile()) == f"apache/kafka:{kafka_version()}"


def test_connect_image_checks_its_kafka_version_against_the_kafka_pom() -> None:
    assert "maven/kafka/pom.xml" in dockerfile()


def test_connect_image_fetches_each_debezium_pom_into_its_own_plugin_folder() -> None:
    loop = re.search(r"for plugin in ([\w\s-]+?); do", dockerfile())
    assert loop, "the Dockerfile fetches plugins in a `for plugin in ...; do` loop"
    assert sorted(loop.group(1).split()) == sorted(debezium_versions())
    assert "COPY stack/maven/ maven/" in dockerfile()
    assert '-f "maven/$plugin/pom.xml" dependency:copy-dependencies' in dockerfile()


@pytest.mark.parametrize("path", [CONNECT_DOCKERFILE, COMPOSE_FILE], ids=lambda p: p.name)
def test_debezium_versions_are_read_from_the_poms_not_retyped(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert [version for version in debezium_versions().values() if version in text] == []


@pytest.mark.parametrize("jar", ["kafka-clients-*.jar", "connect-api-*.jar", "slf4j-api-*.jar"])
def test_connect_image_removes_a_jar_the_worker_provides(jar: str) -> None:
    assert f'"/plugins/$plugin"/{jar}' in dockerfile()


def test_connect_build_context_sends_every_path_the_dockerfile_copies() -> None:
    ignore = (CONNECT_DOCKERFILE.parent / "Dockerfile.dockerignore").read_text(encoding="utf-8")
    sent = [line[1:].rstrip("/") for line in ignore.splitlines() if line.startswith("!")]
    copied = [source for line in re.findall(r"^COPY\s+(?!--from)(.+)$", dockerfile(), re.MULTILINE)
              for source in line.split()[:-1] if not source.startswith("--")]
    assert copied
    assert [path for path in copied if not any(path.startswith(s) for s in sent)] == []


def test_connect_is_built_from_the_repository_root() -> None:
    build = services()["connect"]["build"]
    assert (COMPOSE_DIR / build["context"]).resolve() == ROOT
    assert (ROOT / build["dockerfile"]).resolve() == CONNECT_DOCKERFILE


def test_host_ports_equal_the_local_stack_defaults() -> None:
    """The stack's services; cdc-sync's own (daemon, api, sink) are checked in test_deploy.py."""
    published = {name: host_ports(service) for name, service in services().items()
                 if name in local_default_ports()}
    assert published == {name: [port] for name, port in local_default_ports().items()}


def test_kafka_advertises_its_host_port_on_loopback() -> None:
    listeners = services()["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert f"://127.0.0.1:{local_default_ports()['kafka']}" in listeners


def test_connect_forwards_the_local_stack_addresses_to_the_services() -> None:
    forwards = services()["connect"]["environment"]["LOOPBACK_FORWARDS"].split()
    expected = {f"{local_default_ports()[s]}={s}:{local_default_ports()[s]}"
                for s in ("postgres", "mariadb", "kafka")}
    assert set(forwards) == expected


def test_postgres_server_has_the_local_server_settings() -> None:
    command = services()["postgres"]["command"].split()
    assert command[0] == "postgres"
    settings = [value for flag, value in zip(command[1::2], command[2::2], strict=True) if flag == "-c"]
    assert settings == list(stackctl().PG_SETTINGS)


def test_kafka_broker_has_the_local_broker_settings() -> None:
    env = {key: str(value) for key, value in services()["kafka"]["environment"].items()}
    local = fixed_settings(STACK_DIR / "conf" / "server.properties")
    wanted = {kafka_image_env_name(key): value for key, value in local.items()
              if key not in BROKER_SETTINGS_THAT_DIFFER}
    assert {name: env.get(name) for name in wanted} == wanted


def test_connect_worker_has_the_local_worker_settings() -> None:
    local_template = STACK_DIR / "conf" / "connect.properties"
    compose = properties(CONNECT_PROPERTIES)
    assert sorted(compose) == sorted(properties(local_template))
    fixed = fixed_settings(local_template)
    assert {key: compose[key] for key in fixed} == fixed


def test_connect_worker_plugin_path_is_where_the_image_puts_the_plugins() -> None:
    assert properties(CONNECT_PROPERTIES)["plugin.path"] == "/opt/connect/plugins"
    assert "COPY --from=plugins /plugins/ /opt/connect/plugins/" in dockerfile()


@pytest.mark.parametrize("service", sorted(services()))
def test_service_has_a_healthcheck(service: str) -> None:
    assert services()[service].get("healthcheck", {}).get("test")


@pytest.mark.parametrize("service", sorted(services()))
def test_service_starts_after_its_dependencies_are_healthy(service: str) -> None:
    depends_on = services()[service].get("depends_on", {})
    assert isinstance(depends_on, dict), "use the long form: name: {condition: service_healthy}"
    assert {dependency["condition"] for dependency in depends_on.values()} <= {"service_healthy"}


def test_every_compose_variable_has_a_default() -> None:
    references = [ref for value in strings_in(services())
                  for ref in re.findall(r"(?<!\$)\$\{([^}]*)\}", value)]
    assert references, "passwords come from ${VAR:-default} variables"
    assert [ref for ref in references if ":-" not in ref] == []


@pytest.mark.parametrize("service", sorted(services()))
def test_bind_mounts_point_at_existing_files(service: str) -> None:
    sources = [str(volume).split(":")[0] for volume in services()[service].get("volumes", [])]
    assert [s for s in sources if s.startswith(".") and not (COMPOSE_DIR / s).exists()] == []


def test_readme_names_the_debezium_version_of_each_pom() -> None:
    readme = COMPOSE_README.read_text(encoding="utf-8")
    assert [version for version in debezium_versions().values() if version not in readme] == []
