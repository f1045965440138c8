"""Settings: the YAML file, CDC_SYNC_… overrides, and the errors an operator sees."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cdc_sync import cli, settings
from cdc_sync.core.config import Config
from cdc_sync.core.errors import ConfigError

DEMO = Path(__file__).resolve().parents[1] / "config" / "cdc-sync.yaml"

USERS_TABLE = """\
mapping:
  tables:
    "shop:public.users":
      identifiers: {user_id: id}
      attributes:
        city: {column: city, type: town}
"""


def write(tmp_path: Path, text: str, name: str = "cdc-sync.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def config_error(path: Path | None, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        settings.load(path, env or {})
    return str(info.value)


# ---------------------------------------------------------------- the file


def test_demo_config_loads() -> None:
    cfg = settings.load(DEMO, {})
    assert cfg.kafka.topic_pattern == r"^(shop|crm)\..+|^__debezium-heartbeat\.(shop|crm)$"
    assert cfg.store.dsn == "postgresql://cdc:cdc@127.0.0.1:5432/cdc_sync"
    assert cfg.redis.ttl_seconds == 300
    assert cfg.mapping.sources["shop"].priority == 2
    assert "crm:crm.contacts" in cfg.mapping.tables
    assert set(cfg.mapping.aggregates) == {"order_count", "lifetime_value", "last_order_at"}


def test_keys_the_file_leaves_out_take_their_defaults(tmp_path: Path) -> None:
    cfg = settings.load(write(tmp_path, "kafka:\n  group_id: other\n"), {})
    assert cfg.kafka.group_id == "other"
    assert cfg.kafka.max_poll_records == Config().kafka.max_poll_records
    assert cfg.store == Config().store


@pytest.mark.parametrize("text", ["", "# only a comment\n"], ids=["empty", "comments-only"])
def test_an_empty_file_gives_the_defaults(tmp_path: Path, text: str) -> None:
    assert settings.load(write(tmp_path, text), {}) == Config()


def test_no_file_and_no_config_variable_gives_the_defaults() -> None:
    assert settings.load(None, {}) == Config()


@pytest.mark.parametrize(("text", "dotted"), [
    ("kafka:\n  max_poll_recrods: 5\n", "kafka.max_poll_recrods"),
    ("kafak:\n  group_id: x\n", "kafak"),
    ("kafka:\n  max_poll_records: lots\n", "kafka.max_poll_records"),
    ("kafka:\n  max_poll_records: 0\n", "kafka.max_poll_records"),
    ("kafka:\n  auto_offset_reset: newest\n", "kafka.auto_offset_reset"),
    ("redis:\n  ttl_seconds: 1.5\n", "redis.ttl_seconds"),
    ("store:\n  dsn: [a, b]\n", "store.dsn"),
    ("connect: http://127.0.0.1:8083\n", "connect"),
    (USERS_TABLE, "mapping.tables.shop:public.users.attributes.city.type"),
    ("mapping:\n  sources:\n    shop: {priority: 70000}\n", "mapping.sources.shop.priority"),
    ("redis:\n  namespace: 'prod:eu'\n", "redis.namespace"),
], ids=["unknown-key", "unknown-section", "wrong-type", "out-of-range", "not-an-allowed-value",
        "fraction-for-an-integer", "list-for-a-string", "scalar-for-a-section", "bad-nested-mapping-value",
        "priority-too-large", "namespace-with-a-colon"])
def test_a_bad_value_fails_naming_the_file_and_the_dotted_key(tmp_path: Path, text: str, dotted: str) -> None:
    path = write(tmp_path, text)
    assert config_error(path).startswith(f"{path}: {dotted}: ")


def test_every_problem_is_reported_on_its_own_line(tmp_path: Path) -> None:
    path = write(tmp_path, "kafka:\n  max_poll_records: x\nredis:\n  ttl_seconds: -1\n")
    lines = config_error(path).splitlines()
    assert [line.split(": ")[:2] for line in lines] == [
        [str(path), "kafka.max_poll_records"], [str(path), "redis.ttl_seconds"]]


def test_invalid_yaml_fails_naming_the_file_and_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "kafka:\n  group_id: [unclosed\nstore: {}\n")
    message = config_error(path)
    assert message.startswith(f"{path}: not valid YAML at line ")


def test_a_missing_file_fails_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.yaml"
    assert config_error(path) == f"{path}: cannot read config (No such file or directory)"


@pytest.mark.parametrize("text", ["- kafka\n- store\n", "kafka\n", "42\n"], ids=["list", "word", "number"])
def test_a_top_level_that_is_not_a_mapping_fails_naming_the_file(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    assert config_error(path) == f"{path}: the top level must be a mapping of sections"


def test_a_section_with_every_key_commented_out_is_an_error_not_the_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "kafka:\n  # group_id: x\n")
    assert config_error(path).startswith(f"{path}: kafka: Input should be a valid dictionary")


def test_a_file_that_is_not_utf8_fails_as_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("# Müller's shop\nkafka:\n  group_id: x\n".encode("latin-1"))
    assert config_error(path).startswith(f"{path}: ")


# ---------------------------------------------------------------- environment overrides


def test_env_override_wins_over_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "kafka:\n  bootstrap_servers: file:9092\n  group_id: from-file\n")
    cfg = settings.load(path, {"CDC_SYNC_KAFKA__BOOTSTRAP_SERVERS": "env:9092"})
    assert cfg.kafka.bootstrap_servers == "env:9092"
    assert cfg.kafka.group_id == "from-file"


def test_env_override_sets_the_store_dsn_without_a_file() -> None:
    cfg = settings.load(None, {"CDC_SYNC_STORE__DSN": "postgresql://u@db:5432/profiles"})
    assert cfg.store.dsn == "postgresql://u@db:5432/profiles"


def test_env_override_text_is_converted_to_the_key_type() -> None:
    assert settings.load(None, {"CDC_SYNC_REDIS__TTL_SECONDS": "45"}).redis.ttl_seconds == 45


def test_env_override_reaches_into_the_mapping_section() -> None:
    assert settings.load(None, {"CDC_SYNC_MAPPING__UNMAPPED": "ignore"}).mapping.unmapped == "ignore"


def test_env_override_of_the_wrong_type_fails_naming_the_dotted_key(tmp_path: Path) -> None:
    path = write(tmp_path, "redis:\n  ttl_seconds: 30\n")
    message = config_error(path, {"CDC_SYNC_REDIS__TTL_SECONDS": "abc"})
    # The message names the variable the bad value came from, not the file.
    assert message.startswith(
        "$CDC_SYNC_REDIS__TTL_SECONDS: redis.ttl_seconds: Input should be a valid integer")


def test_env_override_of_an_unknown_key_fails_naming_it() -> None:
    assert config_error(None, {"CDC_SYNC_KAFKA__BOOTSTRAP": "x:1"}).startswith(
        "$CDC_SYNC_KAFKA__BOOTSTRAP: kafka.bootstrap: Extra inputs are not permitted")


@pytest.mark.parametrize("name", ["CDC_SYNC_LOG_LEVEL", "CDC_SYNC_STACK_DIR", "CDC_SYNC_KAFKA",
                                  "KAFKA__GROUP_ID", "cdc_sync_kafka__group_id"])
def test_variables_that_are_not_section_overrides_are_ignored(name: str) -> None:
    assert settings.load(None, {name: "whatever"}) == Config()


# ---------------------------------------------------------------- finding the file


def test_config_variable_picks_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "kafka:\n  group_id: from-variable\n")
    assert settings.load(None, {"CDC_SYNC_CONFIG": str(path)}).kafka.group_id == "from-variable"


def test_an_explicit_path_wins_over_the_config_variable(tmp_path: Path) -> None:
    explicit = write(tmp_path, "kafka:\n  group_id: explicit\n", "explicit.yaml")
    other = write(tmp_path, "kafka:\n  group_id: variable\n", "variable.yaml")
    assert settings.load(explicit, {"CDC_SYNC_CONFIG": str(other)}).kafka.group_id == "explicit"


def test_an_empty_config_variable_means_no_file() -> None:
    assert settings.load(None, {"CDC_SYNC_CONFIG": ""}) == Config()


def test_a_missing_file_named_by_the_config_variable_fails_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "gone.yaml"
    assert config_error(None, {"CDC_SYNC_CONFIG": str(path)}).startswith(f"{path}: cannot read config")


# ---------------------------------------------------------------- the command line


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, restore_logging: None) -> None:
    """No CDC_SYNC_… variable of this machine; logging set back after cli.main configured it."""
    for name in list(os.environ):
        if name.startswith("CDC_SYNC_"):
            monkeypatch.delenv(name)


@pytest.mark.usefixtures("clean_env")
def test_cli_exits_2_with_one_line_per_config_problem(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "kafka:\n  max_poll_records: x\n" + USERS_TABLE)
    assert cli.main(["--config", str(path), "migrate"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "Traceback" not in err
    assert err.splitlines() == [
        f"cdc-sync: config error: {path}: kafka.max_poll_records: "
        "Input should be a valid integer, unable to parse string as an integer",
        f"{path}: mapping.tables.shop:public.users.attributes.city.type: Input should be 'string', "
        "'integer', 'number', 'decimal', 'boolean', 'date', 'datetime' or 'json'",
    ]


@pytest.mark.usefixtures("clean_env")
def test_cli_exits_2_for_a_missing_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "nowhere.yaml"
    assert cli.main(["--config", str(path), "migrate"]) == 2
    assert capsys.readouterr().err == (
        f"cdc-sync: config error: {path}: cannot read config (No such file or directory)\n")


@pytest.mark.usefixtures("clean_env")
def test_cli_reads_the_file_named_by_the_config_variable(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "redis:\n  ttl_seconds: 0\n")
    monkeypatch.setenv("CDC_SYNC_CONFIG", str(path))
    assert cli.main(["migrate"]) == 2
    assert capsys.readouterr().err.startswith(f"cdc-sync: config error: {path}: redis.ttl_seconds: ")


@pytest.mark.usefixtures("clean_env")
def test_cli_exits_2_for_a_bad_env_override(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDC_SYNC_REDIS__TTL_SECONDS", "abc")
    assert cli.main(["migrate"]) == 2
    assert "redis.ttl_seconds" in capsys.readouterr().err


@pytest.mark.usefixtures("clean_env")
def test_cli_exits_2_for_a_config_file_that_is_not_utf8(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("# Müller's shop\nkafka:\n  group_id: x\n".encode("latin-1"))
    assert cli.main(["--config", str(path), "migrate"]) == 2
    assert capsys.readouterr().err.startswith(f"cdc-sync: config error: {path}: ")


# ---------------------------------------------------------------- secrets stay out of messages

SECRET = "s3cret"


@pytest.mark.parametrize(("key", "value"), [
    ("store.dsn", f"postgresql://cdc:{SECRET}@host:notaport/db"),
    ("store.dsn", f"postgresql://cdc:{SECRET}@h1:5432,h2:x/db"),
    ("store.dsn", f"postgresql://cdc:{SECRET}@[bad/db"),
    ("store.dsn", f"host=db user=cdc password={SECRET} port=notaport"),
    ("redis.url", f"redis://:{SECRET}@host:notaport/0"),
    ("redis.url", f"redis://u:{SECRET}@[bad/0"),
    ("redis.url", f"http://:{SECRET}@host:6379/0"),
    ("connect.url", f"http://admin:{SECRET}@host:notaport"),
], ids=["dsn-port", "dsn-second-host-port", "dsn-bracket", "dsn-key-value-port", "redis-port",
        "redis-bracket", "redis-scheme", "connect-port"])
def test_a_malformed_url_is_reported_by_its_key_without_its_password(
        tmp_path: Path, key: str, value: str) -> None:
    section, name = key.split(".")
    path = write(tmp_path, f"{section}:\n  {name}: {value!r}\n")
    message = config_error(path)
    assert message.startswith(f"{path}: {key}: ") and SECRET not in message
    variable = f"CDC_SYNC_{section.upper()}__{name.upper()}"
    env_message = config_error(None, {variable: value})
    assert env_message.startswith(f"${variable}: {key}: ")
    assert SECRET not in env_message


@pytest.mark.parametrize("dsn", [
    "postgresql://cdc:cdc@127.0.0.1:5432/cdc_sync", "postgres://cdc@[::1]:5432/db",
    "postgresql://cdc@h1:5432,h2:5433/db", "postgresql:///db?host=/run/postgresql",
    "host=db port=5432 dbname=x", "host=a,b port=5432,5433", "dbname=x"])
def test_well_formed_dsns_are_accepted(dsn: str) -> None:
    assert settings.load(None, {"CDC_SYNC_STORE__DSN": dsn}).store.dsn == dsn


@pytest.mark.parametrize("dsn", [
    f"postgresql://cdc:{SECRET}@[bad/db", f"postgresql://cdc:s3%zz{SECRET}@h/db",
    f"host=h password='{SECRET}", f"host=h password={SECRET} bogus=1"])
def test_the_store_refuses_a_malformed_dsn_naming_the_key_without_the_password(dsn: str) -> None:
    from cdc_sync.adapters import store

    with pytest.raises(ConfigError) as info:
        store.connect(dsn)
    assert str(info.value).startswith("store.dsn: ") and SECRET not in str(info.value)


def test_a_url_in_a_message_shows_its_user_but_not_its_password() -> None:
    from cdc_sync.core.config import without_password

    assert without_password(f"http://admin:{SECRET}@connect:8083/x") == "http://admin:***@connect:8083/x"
    assert without_password("http://connect:8083") == "http://connect:8083"


@pytest.mark.usefixtures("clean_env")
def test_cli_reports_a_malformed_dsn_by_its_key_and_never_prints_the_password(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDC_SYNC_STORE__DSN", f"postgresql://cdc:{SECRET}@host:notaport/db")
    assert cli.main(["migrate"]) == 2
    out, err = capsys.readouterr()
    assert "store.dsn" in err and SECRET not in out + err and "Traceback" not in err


# ---------------------------------------------------------------- trigger rules

DEMO_MAPPING = DEMO.read_text().split("\ntriggers:")[0]


def with_rules(tmp_path: Path, rules: str) -> Path:
    return write(tmp_path, DEMO_MAPPING + "\ntriggers:\n" + rules)


def test_the_demo_rules_load_with_durations_in_units() -> None:
    rules = settings.load(DEMO, {}).triggers
    assert rules.abandoned_cart is not None and rules.abandoned_cart.delay == 20
    assert rules.profile_updated is not None and rules.profile_updated.window == 5
    assert rules.allowed_lateness == 5


@pytest.mark.parametrize("rules, message", [
    ("  abandoned_cart: {cart: basket}\n",
     "triggers.abandoned_cart.cart: 'basket' is no table's entity kind"),
    ("  abandoned_cart: {item: order_item}\n",
     "triggers.abandoned_cart.item: 'order_item' rows are not owned through the cart kind 'cart'"),
    ("  abandoned_cart: {quantity_field: qty}\n",
     "triggers.abandoned_cart.quantity_field: entity 'cart_item' keeps no column 'qty'"),
    ("  abandoned_cart: {delay: soon}\n",
     "triggers.abandoned_cart.delay: Value error, a duration is seconds"),
    ("  abandoned_cart: {quiet_hours: {start: '22:00', end: '07:00', default_timezone: Mars/Olympus}}\n",
     "triggers.abandoned_cart.quiet_hours.default_timezone: Value error, 'Mars/Olympus' is not an IANA"),
    ("  profile_updated: {watch: []}\n", "triggers.profile_updated.watch: List should have at least 1 item"),
    ("  profile_updated: {watch: [city], windw: 3s}\n", "triggers.profile_updated.windw: Extra inputs"),
])
def test_a_bad_rule_fails_the_start_naming_its_key(tmp_path: Path, rules: str, message: str) -> None:
    path = with_rules(tmp_path, rules)
    assert f"{path}: {message}" in config_error(path)


def test_triggers_refuse_a_consumer_that_would_skip_changes(tmp_path: Path) -> None:
    message = config_error(DEMO, {"CDC_SYNC_KAFKA__AUTO_OFFSET_RESET": "latest"})
    assert f"{DEMO}: kafka.auto_offset_reset: triggers need every change" in message


def test_a_heartbeat_table_cannot_also_be_mapped(tmp_path: Path) -> None:
    text = DEMO_MAPPING.replace('"shop:public.products":', '"shop:public.cdc_heartbeat":')
    message = config_error(write(tmp_path, text))
    assert "shop:public.cdc_heartbeat: a source's heartbeat_table is not mapped" in message


# ---------------------------------------------------------------- delivery

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
ESP = """\
delivery:
  destinations:
    esp:
      url: https://esp.example/hooks
      secret_env: ESP_SECRET
      types: [cart.abandoned]
      rate_limit: {per_second: 5, burst: 10}
      headers_env: {Authorization: ESP_KEY}
"""


def test_a_destination_reads_its_secret_and_headers_from_the_environment(tmp_path: Path) -> None:
    cfg = settings.load(write(tmp_path, ESP), {})
    creds = settings.credentials(cfg.delivery, {"ESP_SECRET": SECRET, "ESP_KEY": "Klaviyo-API-Key k"})
    assert creds["esp"].headers == {"Authorization": "Klaviyo-API-Key k"} and len(creds["esp"].key) == 24
    assert cfg.delivery.routes() == {"cart.abandoned": ["esp"]}
    assert cfg.delivery.destinations["esp"].max_retry_age == 86400


def test_a_missing_secret_fails_naming_the_key_and_never_shows_a_value(tmp_path: Path) -> None:
    cfg = settings.load(write(tmp_path, ESP), {})
    with pytest.raises(ConfigError,
                       match=r"delivery\.destinations\.esp\.secret_env: \$ESP_SECRET is not set"):
        settings.credentials(cfg.delivery, {})
    with pytest.raises(ConfigError) as info:
        settings.credentials(cfg.delivery, {"ESP_SECRET": "not-a-whsec-secret", "ESP_KEY": "k"})
    assert "delivery.destinations.esp.secret_env: a signing secret starts with whsec_" in str(info.value)
    assert "not-a-whsec-secret" not in str(info.value)


def test_a_secret_file_is_read(tmp_path: Path) -> None:
    secret = tmp_path / "esp.secret"
    secret.write_text(SECRET + "\n")
    text = ESP.replace("secret_env: ESP_SECRET", f"secret_file: {secret}").replace(
        "      headers_env: {Authorization: ESP_KEY}\n", "")
    creds = settings.credentials(settings.load(write(tmp_path, text), {}).delivery, {})
    assert len(creds["esp"].key) == 24


@pytest.mark.parametrize(("change", "dotted", "why"), [
    (("secret_env: ESP_SECRET", "secret: whsec_abc"), "delivery.destinations.esp.secret",
     "Extra inputs are not permitted"),
    (("      secret_env: ESP_SECRET\n", ""), "delivery.destinations.esp", "exactly one of secret_env"),
    (("types: [cart.abandoned]", "types: [cart.left]"), "delivery.destinations.esp.types",
     "unknown trigger type 'cart.left'"),
    (("types: [cart.abandoned]", "format: mailchimp"), "delivery.destinations.esp.format",
     "unknown body format 'mailchimp'"),
    (("url: https://esp.example/hooks", "url: esp.example"), "delivery.destinations.esp.url", "should match"),
    (("per_second: 5", "per_second: 0"), "delivery.destinations.esp.rate_limit.per_second", "greater than 0"),
])
def test_a_bad_destination_fails_at_start_naming_its_key(tmp_path: Path, change: tuple[str, str],
                                                          dotted: str, why: str) -> None:
    message = config_error(write(tmp_path, ESP.replace(*change)))
    assert f": {dotted}: " in message and why in message, message
