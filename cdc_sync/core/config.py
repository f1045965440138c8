"""The configuration as validated values. Read once at the edge (settings.py), passed down."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

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


class StoreConfig(Section):
    dsn: str = "postgresql://cdc@127.0.0.1:5432/cdc_sync"


class RedisConfig(Section):
    url: str = "redis://127.0.0.1:6379/0"
    ttl_seconds: int = Field(default=30, gt=0)


class ConnectConfig(Section):
    url: str = "http://127.0.0.1:8083"


class Config(Section):
    """The whole configuration file."""

    kafka: KafkaConfig = KafkaConfig()
    store: StoreConfig = StoreConfig()
    redis: RedisConfig = RedisConfig()
    connect: ConnectConfig = ConnectConfig()
    mapping: MappingConfig = MappingConfig()
