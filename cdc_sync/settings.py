"""Read the configuration once, at start: a YAML file, then CDC_SYNC_… environment overrides.

`CDC_SYNC_KAFKA__BOOTSTRAP_SERVERS=host:9092` overrides `kafka.bootstrap_servers`:
the prefix, then the key path in upper case joined by a double underscore.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from cdc_sync.core.config import Config
from cdc_sync.core.destinations import Credentials, DeliveryConfig
from cdc_sync.core.errors import ConfigError
from cdc_sync.core.rules import check_rules
from cdc_sync.core.webhooks import secret_key

ENV_PREFIX = "CDC_SYNC_"
CONFIG_ENV = "CDC_SYNC_CONFIG"


def load(path: Path | None, env: Mapping[str, str] = os.environ) -> Config:
    """Load and validate the config at `path` (or $CDC_SYNC_CONFIG, or defaults) with env overrides.

    Raises ConfigError whose message starts with the file and the dotted path of the bad key.
    """
    if path is None and env.get(CONFIG_ENV):
        path = Path(env[CONFIG_ENV])
    origin = str(path) if path else "<defaults>"
    raw = read_yaml(path) if path else {}
    overridden = apply_env_overrides(raw, env)
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(describe(origin, exc, overridden)) from None
    problems = check_rules(config.triggers, config.mapping, config.kafka.auto_offset_reset)
    if problems:
        raise ConfigError("\n".join(f"{origin}: {path}: {why}" for path, why in problems))
    return config


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return doc


def apply_env_overrides(raw: dict[str, Any], env: Mapping[str, str]) -> dict[str, str]:
    """Set each CDC_SYNC_A__B=value into raw[a][b]; pydantic then checks and converts it.

    Returns the dotted paths set this way, with the variable that set each.
    """
    overridden: dict[str, str] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV or "__" not in name:
            continue
        keys = name[len(ENV_PREFIX):].lower().split("__")
        node = raw
        for key in keys[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                break
            node = child
        else:
            node[keys[-1]] = value
            overridden[".".join(keys)] = name
    return overridden


def describe(origin: str, exc: ValidationError, overridden: Mapping[str, str]) -> str:
    """One line per problem: `file: a.b.c: why`, or `$VARIABLE: a.b.c: why` when it set the key."""
    lines = []
    for err in exc.errors():
        path = ".".join(str(part) for part in err["loc"]) or "<top>"
        where = f"${overridden[path]}" if path in overridden else origin
        lines.append(f"{where}: {path}: {err['msg']}")
    return "\n".join(lines)


def credentials(delivery: DeliveryConfig, env: Mapping[str, str] = os.environ) -> dict[str, Credentials]:
    """Each destination's signing key and extra headers, read from the environment or files it
    names. Raises ConfigError naming the key; never quotes a secret."""
    out = {}
    for name, dest in delivery.destinations.items():
        where = f"delivery.destinations.{name}"
        if dest.secret_env is not None:
            path, text = f"{where}.secret_env", env.get(dest.secret_env)
            if not text:
                raise ConfigError(f"{path}: ${dest.secret_env} is not set (it holds the whsec_ secret)")
        else:
            path = f"{where}.secret_file"
            try:
                text = Path(str(dest.secret_file)).read_text()
            except OSError as exc:
                raise ConfigError(f"{path}: cannot read {dest.secret_file} ({exc.strerror})") from None
        try:
            key = secret_key(text)
        except ValueError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        headers = {}
        for header, var in dest.headers_env.items():
            if not env.get(var):
                raise ConfigError(f"{where}.headers_env.{header}: ${var} is not set")
            headers[header] = env[var]
        out[name] = Credentials(key, headers)
    return out
