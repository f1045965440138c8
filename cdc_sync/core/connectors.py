"""Connector definitions: a JSON file with a name and a config whose values may hold ${ENV} placeholders."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from cdc_sync.core.errors import ConfigError

PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True, slots=True)
class ConnectorSpec:
    """A Kafka Connect connector as applied: its name and its fully expanded config."""

    name: str
    config: Mapping[str, str]


def parse_spec(text: str, origin: str) -> tuple[str, dict[str, str]]:
    """Parse a connector file (`{"name": …, "config": {…}}`) into its name and raw config.

    Raises ConfigError naming `origin` and the offending key.
    """
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{origin}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{origin}: expected an object with 'name' and 'config'")
    name, config = doc.get("name"), doc.get("config")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{origin}: name: a non-empty string is required")
    if not isinstance(config, dict) or not config:
        raise ConfigError(f"{origin}: config: a non-empty object is required")
    for key, value in config.items():
        if not isinstance(value, str):
            raise ConfigError(f"{origin}: config.{key}: Connect wants string values")
    return name, config


def expand(name: str, config: Mapping[str, str], env: Mapping[str, str], origin: str) -> ConnectorSpec:
    """Fill every ${VAR} in the config from `env`.

    Raises ConfigError listing each missing variable with the key that uses it,
    so that nothing half-filled is ever sent to Connect.
    """
    missing: list[str] = []

    def fill(key: str, value: str) -> str:
        def one(match: re.Match[str]) -> str:
            var = match.group(1)
            if not env.get(var):
                missing.append(f"config.{key} needs ${{{var}}}")
                return match.group(0)
            return env[var]

        return PLACEHOLDER.sub(one, value)

    filled = {key: fill(key, value) for key, value in config.items()}
    if missing:
        raise ConfigError(f"{origin}: environment variables not set: {'; '.join(missing)}")
    return ConnectorSpec(name=name, config=filled)
