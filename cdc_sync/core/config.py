"""The configuration as validated values. Read once at the edge (settings.py), passed down."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cdc_sync.core.mapping import MappingConfig


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


class StoreConfig(Section):
    dsn: str = Field(default="postgresql://cdc@127.0.0.1:5432/cdc_sync", min_length=1)


class RedisConfig(Section):
    url: str = Field(default="redis://127.0.0.1:6379/0", pattern=r"^(redis|rediss|unix)://")
    ttl_seconds: int = Field(default=30, gt=0)


class ConnectConfig(Section):
    url: str = Field(default="http://127.0.0.1:8083", pattern=r"^https?://")


class Config(Section):
    """The whole configuration file."""

    kafka: KafkaConfig = KafkaConfig()
    store: StoreConfig = StoreConfig()
    redis: RedisConfig = RedisConfig()
    connect: ConnectConfig = ConnectConfig()
    mapping: MappingConfig = MappingConfig()
