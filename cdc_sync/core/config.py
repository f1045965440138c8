"""The configuration as validated values. Read once at the edge (settings.py), passed down."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cdc_sync.core.destinations import DeliveryConfig
from cdc_sync.core.mapping import MappingConfig
from cdc_sync.core.rules import TriggersConfig
from cdc_sync.core.tokens import check_hash


class Section(BaseModel):
    """Every section is strict about its keys: a typo fails at start, not silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaConfig(Section):
    bootstrap_servers: str = "127.0.0.1:9092"
    group_id: str = "cdc-sync"
    # Debezium topics are <prefix>.<schema|db>.<table>; heartbeats are __debezium-heartbeat.<prefix>.
    topic_pattern: str = r"^(shop|crm)\..+|^__debezium-heartbeat\..+"
    auto_offset_reset: str = Field(default="earliest", pattern="^(earliest|latest)$")
    max_poll_records: int = Field(default=2000, gt=0)
    session_timeout_ms: int = Field(default=30000, gt=0)
    prepare_process: bool = True  # decode and map in a worker process (False: in the daemon's own)

    @field_validator("topic_pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression ({exc})") from None
        return pattern

    @field_validator("bootstrap_servers")
    @classmethod
    def _host_ports(cls, servers: str) -> str:
        for server in servers.split(","):
            host, _, port = server.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"{server.strip()!r} is not host:port")
        return servers


# These checks run before any client sees a URL, and their messages never quote it: a URL
# or DSN may hold a password.
def check_url_hosts(url: str) -> str:
    """`url` if each of its hosts' ports (comma-separated hosts allowed) is a number; else ValueError."""
    try:
        netloc = urlsplit(url).netloc
    except ValueError:  # an unclosed [IPv6] bracket
        raise ValueError("not a valid URL (the value is not shown: it may hold a password)") from None
    for host in netloc.rpartition("@")[2].split(","):
        port = host.rpartition("]")[2] if host.startswith("[") else host
        if ":" in port and not port.rpartition(":")[2].isdigit():
            raise ValueError("the port is not a number (the value is not shown: it may hold a password)")
    return url


def without_password(url: str) -> str:
    """`url` with the password of its user part, if any, replaced by ***, for messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<an invalid URL>"
    if parts.password is None:
        return url
    user, _, _ = parts.netloc.rpartition("@")[0].partition(":")
    return parts._replace(netloc=f"{user}:***@{parts.netloc.rpartition('@')[2]}").geturl()


class StoreConfig(Section):
    dsn: str = Field(default="postgresql://cdc@127.0.0.1:5432/cdc_sync", min_length=1)

    @field_validator("dsn")
    @classmethod
    def _ports_are_numbers(cls, dsn: str) -> str:
        if re.match(r"postgres(ql)?://", dsn):
            return check_url_hosts(dsn)
        port = re.search(r"(?:^|\s)port\s*=\s*'?([^\s']*)", dsn)  # the key=value form
        if port and not all(p.isdigit() for p in port.group(1).split(",")):
            raise ValueError("the port is not a number (the value is not shown: it may hold a password)")
        return dsn


class RedisConfig(Section):
    url: str = Field(default="redis://127.0.0.1:6379/0", pattern=r"^(redis|rediss|unix)://")
    ttl_seconds: int = Field(default=300, gt=0)  # a cached profile lives this long at most
    # The keys' namespace; unset, the store's own (ProfileStore.cache_namespace). Set it when a
    # store is a physical copy of another (a snapshot restore) and both share a Redis database.
    namespace: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")

    @field_validator("url")
    @classmethod
    def _port_is_a_number(cls, url: str) -> str:
        return check_url_hosts(url) if not url.startswith("unix://") else url


class ConnectConfig(Section):
    url: str = Field(default="http://127.0.0.1:8083", pattern=r"^https?://")

    @field_validator("url")
    @classmethod
    def _port_is_a_number(cls, url: str) -> str:
        return check_url_hosts(url)


class ApiToken(Section):
    """A bearer token the API accepts: its salted hash (`cdc-sync api token` makes one) and scopes."""

    hash: str
    scopes: Annotated[list[Literal["profiles:read", "admin"]], Field(min_length=1)]

    @field_validator("hash")
    @classmethod
    def _hashed(cls, stored: str) -> str:
        return check_hash(stored)

    @field_validator("scopes", mode="before")
    @classmethod
    def _comma_separated(cls, scopes: Any) -> Any:
        """A list, or `profiles:read,admin` (as an environment variable sets it)."""
        return [s.strip() for s in scopes.split(",") if s.strip()] if isinstance(scopes, str) else scopes


class ApiConfig(Section):
    """The send-time API (`cdc-sync api`)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, gt=0, lt=65536)
    tokens: dict[str, ApiToken] = {}  # by a name of your choice (who holds it)
    recent_orders: int = Field(default=5, ge=0)  # orders in a profile's document, newest first
    pool_size: int = Field(default=8, gt=0)  # Postgres connections for cache misses
    # /readyz of the daemon fails above these
    max_lag_records: int = Field(default=100_000, gt=0)
    max_watermark_age_s: float = Field(default=300.0, gt=0)


class MetricsConfig(Section):
    """The daemon's /healthz, /readyz and /metrics (`cdc-sync run`); port 0 turns them off."""

    host: str = "127.0.0.1"
    port: int = Field(default=9108, ge=0, lt=65536)


class Config(Section):
    """The whole configuration file."""

    kafka: KafkaConfig = KafkaConfig()
    store: StoreConfig = StoreConfig()
    redis: RedisConfig = RedisConfig()
    connect: ConnectConfig = ConnectConfig()
    mapping: MappingConfig = MappingConfig()
    triggers: TriggersConfig = TriggersConfig()
    delivery: DeliveryConfig = DeliveryConfig()
    api: ApiConfig = ApiConfig()
    metrics: MetricsConfig = MetricsConfig()
