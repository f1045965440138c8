#!/usr/bin/env python3
"""The local CDC stack as plain processes: Postgres, MariaDB, Redis, Kafka (KRaft), Kafka Connect.

Standard library only, so it runs before the virtual environment exists.
Usage: stackctl.py (up | down | status | jars | env) | (stop | up) SERVICE
`stop SERVICE` stops one service (an outage, for tests); `up [SERVICE]` starts what is not
running again, with its data.

Every service keeps its data, logs and pid file under one state directory
(`.stack/` by default, `CDC_SYNC_STACK_DIR` to move it). Ports default to the
usual ones and can be overridden with STACK_PG_PORT, STACK_MARIADB_PORT,
STACK_REDIS_PORT, STACK_KAFKA_PORT, STACK_CONNECT_PORT. Jars are cached in
STACK_LIB_DIR (default .stack/lib); STACK_MAVEN_ARGS adds arguments to Maven.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STACK_SRC = ROOT / "stack"

DEFAULT_PORTS = {"postgres": 5432, "mariadb": 3306, "redis": 6379, "kafka": 9092, "connect": 8083}
PORT_ENV = {
    "postgres": "STACK_PG_PORT",
    "mariadb": "STACK_MARIADB_PORT",
    "redis": "STACK_REDIS_PORT",
    "kafka": "STACK_KAFKA_PORT",
    "connect": "STACK_CONNECT_PORT",
}
# The local stack's credentials: loopback only, dev defaults, overridable.
DB_USER = os.environ.get("CDC_DB_USER", "cdc")
DB_PASSWORD = os.environ.get("CDC_DB_PASSWORD", "cdc")
PG_BIN = Path("/usr/lib/postgresql/15/bin")
# Server settings, the same in compose/docker-compose.yml (tests/test_compose.py checks).
# Development and test settings: no fsync; buffers that hold a million-event profile store.
PG_SETTINGS = ("wal_level=logical", "max_wal_senders=10", "max_replication_slots=10",
               "fsync=off", "synchronous_commit=off", "shared_buffers=512MB")
DEBIAN_PACKAGES = {
    "postgres": ["postgresql-15", "postgresql-contrib"],
    "mariadb": ["mariadb-server", "mariadb-client"],
    "redis": ["redis-server"],
}
# Not a service: the HTTP load generator of `make bench` (bench/api.py), installed by `tools`.
BENCH_PACKAGES = {"wrk": ["wrk"]}
JAR_SETS = ("kafka", "debezium-postgres", "debezium-mariadb")
OUR_BINARIES = (b"postgres", b"mariadbd", b"redis-server", b"java")
CONNECTOR_CLASSES = (
    "io.debezium.connector.postgresql.PostgresConnector",
    "io.debezium.connector.mariadb.MariaDbConnector",
)


class StackError(Exception):
    """A failure to report as one readable line, naming the service and where to look."""


def port(service: str) -> int:
    raw = os.environ.get(PORT_ENV[service], str(DEFAULT_PORTS[service]))
    try:
        return int(raw)
    except ValueError:
        raise StackError(f"{PORT_ENV[service]}={raw!r} is not a port number") from None


@dataclass(frozen=True)
class Layout:
    """Where everything of the stack lives on disk."""

    state: Path

    @classmethod
    def from_env(cls) -> Layout:
        return cls(Path(os.environ.get("CDC_SYNC_STACK_DIR", ROOT / ".stack")).resolve())

    @property
    def lib(self) -> Path:
        # Jars are a cache, not state: they may live elsewhere and outlive the state directory.
        return Path(os.environ.get("STACK_LIB_DIR", self.state / "lib")).resolve()

    @property
    def plugins(self) -> Path:
        return self.lib / "plugins"

    @property
    def logs(self) -> Path:
        return self.state / "logs"

    @property
    def run(self) -> Path:
        return self.state / "run"

    def data(self, service: str) -> Path:
        if service == "postgres" and (home := postgres_home(self.state)) is not None:
            return home / "data"
        return self.state / "data" / service

    def log(self, service: str) -> Path:
        if service == "postgres" and (home := postgres_home(self.state)) is not None:
            return home / "postgres.log"
        return self.logs / f"{service}.log"

    def pidfile(self, service: str) -> Path:
        return self.run / f"{service}.pid"


_POSTGRES_HOMES: dict[Path, Path | None] = {}


def postgres_home(state: Path) -> Path | None:
    """Where Postgres keeps its files when the postgres user cannot reach the state directory
    (a clone in a mode-0700 home directory, or under `mktemp -d`): a directory of this clone's
    own under /var/lib/cdc-sync-stack. None when it can reach it, or when we are not root (then
    Postgres runs as us)."""
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:  # not installed yet: asked again once it is
        return None
    if state in _POSTGRES_HOMES:
        return _POSTGRES_HOMES[state]
    probe = state if state.exists() else state.parent
    reachable = subprocess.run(["runuser", "-u", "postgres", "--", "test", "-x", str(probe)],
                               capture_output=True, check=False).returncode == 0
    home = None
    if not reachable:
        home = Path("/var/lib/cdc-sync-stack") / hashlib.sha256(str(state).encode()).hexdigest()[:12]
        home.mkdir(parents=True, exist_ok=True)
        os.chmod(home.parent, 0o755)
        shutil.chown(home, "postgres", "postgres")
    _POSTGRES_HOMES[state] = home
    return home


# ---------------------------------------------------------------- processes


def port_open(p: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, p)) == 0


def pid_in(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def alive(pid: int) -> bool:
    """The process exists and has not exited (a zombie has)."""
    try:
        stat = (Path("/proc") / str(pid) / "stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def read_pid(pidfile: Path) -> int | None:
    """The pid in the file when it is one of our running services, else None."""
    pid = pid_in(pidfile)
    if pid is None or not alive(pid):
        return None
    try:
        cmdline = (Path("/proc") / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    # A pid file can outlive its process (a reboot): only trust it if the pid runs one of ours.
    return pid if any(name in cmdline for name in OUR_BINARIES) else None


def run(cmd: list[str], what: str, **kw: object) -> subprocess.CompletedProcess[str]:
    """Run a short command; a failure becomes one line naming `what` and the command's last words."""
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    except FileNotFoundError:
        raise StackError(f"{what}: command not found: {cmd[0]}") from None
    if res.returncode != 0:
        raise StackError(f"{what} failed: {first_error(res.stderr + res.stdout, res.returncode)}")
    return res


def first_error(output: str, returncode: int) -> str:
    """The line of a tool's output that says what went wrong (Maven buries it among others)."""
    plain = re.sub(r"\x1b\[[0-9;]*m", "", output)
    lines = [line.strip() for line in plain.splitlines() if line.strip()]
    flagged = [line for line in lines if "ERROR" in line or "error" in line.lower()]
    return (flagged or lines or [f"exit status {returncode}"])[0][:300]


def as_user(user: str, cmd: list[str]) -> list[str]:
    """Postgres refuses to run as root: drop to its own user when we are root."""
    return ["runuser", "-u", user, "--", *cmd] if os.geteuid() == 0 else cmd


def spawn(layout: Layout, service: str, cmd: list[str], env: dict[str, str] | None = None) -> None:
    """Start a long-running process in its own session, output to its log, pid to its pid file."""
    layout.logs.mkdir(parents=True, exist_ok=True)
    layout.run.mkdir(parents=True, exist_ok=True)
    with open(layout.log(service), "ab") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env={**os.environ, **(env or {})}, cwd=layout.state,
        )
    layout.pidfile(service).write_text(f"{proc.pid}\n")


def wait_until(ready: Callable[[], bool], service: str, layout: Layout, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        # Just spawned: the pid may still be our own fork, before exec; only its death counts.
        pid = pid_in(layout.pidfile(service))
        if service != "postgres" and (pid is None or not alive(pid)):
            break
        time.sleep(0.5)
    raise StackError(
        f"{service} did not become ready within {timeout:.0f}s; see {layout.log(service)}"
    )


def stop_pid(pid: int, grace: float) -> None:
    """SIGTERM the process group, wait up to `grace` seconds, then SIGKILL what is left."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


def ensure_port_free(service: str) -> None:
    p = port(service)
    if port_open(p):
        raise StackError(
            f"{service}: port {p} is already taken by another process; "
            f"stop it or set {PORT_ENV[service]} to a free port"
        )


# ---------------------------------------------------------------- prerequisites


def ensure_java() -> None:
    if shutil.which("java") is None:
        raise StackError("java not found on PATH: install a Java 17 runtime (openjdk-17-jre-headless)")


def missing_packages() -> list[str]:
    probes = {
        "postgres": lambda: (PG_BIN / "postgres").exists(),
        # mariadbd lives in /usr/sbin, which is not on every user's PATH.
        "mariadb": lambda: shutil.which("mariadbd", path=f"/usr/sbin:{os.environ.get('PATH', '')}"),
        "redis": lambda: shutil.which("redis-server"),
    }
    return [pkg for svc, ok in probes.items() if not ok() for pkg in DEBIAN_PACKAGES[svc]]


def ensure_packages(pkgs: list[str] | None = None) -> None:
    """Install the Debian packages of the database servers (or `pkgs`) when they are missing."""
    pkgs = missing_packages() if pkgs is None else pkgs
    if not pkgs:
        return
    if os.geteuid() != 0:
        raise StackError(f"missing Debian packages {' '.join(pkgs)}: run as root or install them")
    print(f"installing Debian packages: {' '.join(pkgs)}", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "update", "-qq"], "apt-get update (is the Debian mirror reachable?)", env=env)
    run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *pkgs],
        f"apt-get install {' '.join(pkgs)}", env=env)
    if Path("/run/systemd/system").is_dir():
        # Debian starts the packaged services on install; they would hold our ports.
        subprocess.run(["systemctl", "disable", "--now", "postgresql", "mariadb", "redis-server"],
                       capture_output=True, check=False)


def ensure_jars(layout: Layout) -> None:
    """Fetch Kafka, Connect and Debezium jars with Maven once; skip when they are present."""
    for name in JAR_SETS:
        dest = layout.lib / "kafka" if name == "kafka" else layout.plugins / name
        if dest.is_dir() and any(dest.glob("*.jar")):
            continue
        if shutil.which("mvn") is None:
            raise StackError("mvn not found on PATH: install Maven (Debian package maven)")
        print(f"fetching {name} jars with Maven", flush=True)
        tmp = dest.with_name(dest.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        run(["mvn", "-q", "-B", "-Dstyle.color=never", *os.environ.get("STACK_MAVEN_ARGS", "").split(),
             "-f", str(STACK_SRC / "maven" / name / "pom.xml"),
             "dependency:copy-dependencies", "-DincludeScope=runtime",
             f"-DoutputDirectory={tmp}"],
            f"Maven download of {name} jars (is Maven Central reachable?)")
        if name != "kafka":
            # The worker provides these; a second copy in the plugin folder clashes.
            for pattern in ("kafka-clients-*", "connect-api-*", "slf4j-api-*"):
                for jar in tmp.glob(pattern):
                    jar.unlink()
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)


# ---------------------------------------------------------------- services


def ensure_reachable_by_postgres(data: Path) -> None:
    """Postgres runs as its own user, which must be able to walk down to its data directory."""
    if subprocess.run(["runuser", "-u", "postgres", "--", "test", "-w", str(data)],
                      capture_output=True, check=False).returncode != 0:
        raise StackError(f"postgres: the postgres user cannot reach {data} (a private home directory?); "
                         "set CDC_SYNC_STACK_DIR to a directory it can reach, e.g. /var/tmp/cdc-sync")


def pg_running(layout: Layout) -> bool:
    return read_pid(layout.data("postgres") / "postmaster.pid") is not None


def pg_psql(layout: Layout, db: str, sql: str | None = None, file: Path | None = None) -> str:
    cmd = ["psql", "-h", "127.0.0.1", "-p", str(port("postgres")), "-U", "postgres", "-d", db,
           "-v", "ON_ERROR_STOP=1", "-qtA"]
    cmd += ["-c", sql] if sql is not None else ["-f", str(file)]
    return run(cmd, f"postgres: psql on {db}").stdout.strip()


def up_postgres(layout: Layout) -> None:
    data = layout.data("postgres")
    if not pg_running(layout):
        ensure_port_free("postgres")
        if not (data / "PG_VERSION").exists():
            data.mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:
                shutil.chown(data, "postgres", "postgres")
                ensure_reachable_by_postgres(data)
            run(as_user("postgres", [str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres",
                                     "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"]),
                f"postgres initdb (see {layout.log('postgres')})")
        layout.logs.mkdir(parents=True, exist_ok=True)
        logfile = layout.log("postgres")
        logfile.touch()
        if os.geteuid() == 0:
            shutil.chown(logfile, "postgres", "postgres")
        opts = (f"-p {port('postgres')} -c listen_addresses=127.0.0.1 -k {data} "
                + " ".join(f"-c {setting}" for setting in PG_SETTINGS))
        run(as_user("postgres", [str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(logfile),
                                 "-o", opts, "-w", "-t", "60", "start"]),
            f"postgres start (see {logfile})")
    wait_until(lambda: port_open(port("postgres")), "postgres", layout, 60)
    setup_postgres(layout)


def setup_postgres(layout: Layout) -> None:
    """Create the login role, the shop database with its demo schema, and the profile store db."""
    pg_psql(layout, "postgres", f"""DO $$ BEGIN
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{DB_USER}') THEN
          CREATE ROLE {DB_USER} LOGIN REPLICATION SUPERUSER PASSWORD '{DB_PASSWORD}';
        END IF; END $$;""")
    existing = set(pg_psql(layout, "postgres", "SELECT datname FROM pg_database").split())
    for db in ("shop", "cdc_sync"):
        if db not in existing:
            pg_psql(layout, "postgres", f"CREATE DATABASE {db} OWNER {DB_USER}")
            if db == "shop":
                pg_psql(layout, "shop", file=STACK_SRC / "sql" / "shop.sql")


def mariadb_cli(layout: Layout, sql: str, db: str | None = None) -> str:
    cmd = ["mariadb", "--no-defaults", "-S", str(layout.data("mariadb") / "mysqld.sock"),
           "-u", "root", "-N", "-B", "-e", sql]
    return run(cmd + ([db] if db else []), "mariadb: client").stdout.strip()


def up_mariadb(layout: Layout) -> None:
    data = layout.data("mariadb")
    db = data / "db"
    if read_pid(layout.pidfile("mariadb")) is None:
        ensure_port_free("mariadb")
        if not (db / "mysql").is_dir():
            db.mkdir(parents=True, exist_ok=True)
            run(["mariadb-install-db", "--no-defaults", f"--datadir={db}", "--user=root",
                 "--auth-root-authentication-method=socket", "--skip-test-db"],
                f"mariadb-install-db (datadir {db})")
        spawn(layout, "mariadb", [
            "mariadbd", "--no-defaults", f"--datadir={db}", f"--port={port('mariadb')}",
            "--bind-address=127.0.0.1", f"--socket={data / 'mysqld.sock'}",
            f"--pid-file={data / 'mysqld.pid'}", "--user=root", "--server-id=1",
            f"--log-bin={db / 'mysql-bin'}", "--binlog-format=ROW", "--binlog-row-image=FULL",
            "--expire-logs-days=2", "--innodb-flush-log-at-trx-commit=2",
        ])
    wait_until(lambda: port_open(port("mariadb")), "mariadb", layout, 60)
    setup_mariadb(layout)


def setup_mariadb(layout: Layout) -> None:
    """Create the replication user and the crm database with its demo schema."""
    mariadb_cli(layout, f"""
        CREATE USER IF NOT EXISTS '{DB_USER}'@'%' IDENTIFIED BY '{DB_PASSWORD}';
        CREATE USER IF NOT EXISTS '{DB_USER}'@'localhost' IDENTIFIED BY '{DB_PASSWORD}';
        GRANT SELECT, RELOAD, SHOW DATABASES, REPLICATION SLAVE, REPLICATION CLIENT
          ON *.* TO '{DB_USER}'@'%', '{DB_USER}'@'localhost';
        GRANT ALL PRIVILEGES ON crm.* TO '{DB_USER}'@'%', '{DB_USER}'@'localhost';""")
    if not mariadb_cli(layout, "SHOW DATABASES LIKE 'crm'"):
        mariadb_cli(layout, "CREATE DATABASE crm CHARACTER SET utf8mb4")
        mariadb_cli(layout, (STACK_SRC / "sql" / "crm.sql").read_text(), db="crm")
    # A stack created before the heartbeat table existed gets it too.
    mariadb_cli(layout, "CREATE TABLE IF NOT EXISTS cdc_heartbeat (id INT PRIMARY KEY,"
                        " ts TIMESTAMP(3) NOT NULL);"
                        " INSERT IGNORE INTO cdc_heartbeat VALUES (1, CURRENT_TIMESTAMP(3));", db="crm")


def up_redis(layout: Layout) -> None:
    if read_pid(layout.pidfile("redis")) is None:
        ensure_port_free("redis")
        data = layout.data("redis")
        data.mkdir(parents=True, exist_ok=True)
        spawn(layout, "redis", ["redis-server", "--port", str(port("redis")),
                                "--bind", "127.0.0.1", "--dir", str(data), "--save", "",
                                "--appendonly", "no"])
    wait_until(lambda: port_open(port("redis")), "redis", layout, 30)


def write_config(layout: Layout, name: str, text: str) -> Path:
    conf = layout.state / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    path = conf / name
    path.write_text(text)
    return path


def java_cmd(layout: Layout, heap: str, classpath: str, main: list[str]) -> list[str]:
    log4j = STACK_SRC / "conf" / "log4j2.properties"
    return ["java", f"-Xmx{heap}", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
            f"-Dlog4j2.configurationFile={log4j}", "-cp", classpath, *main]


def up_kafka(layout: Layout) -> None:
    if read_pid(layout.pidfile("kafka")) is None:
        ensure_port_free("kafka")
        data = layout.data("kafka")
        data.mkdir(parents=True, exist_ok=True)
        template = (STACK_SRC / "conf" / "server.properties").read_text()
        props = write_config(layout, "server.properties", template.format(
            port=port("kafka"), controller_port=port("kafka") + 1, log_dirs=data))
        cp = f"{layout.lib / 'kafka'}/*"
        if not (data / "meta.properties").exists():
            cluster = run(java_cmd(layout, "256m", cp,
                                   ["kafka.tools.StorageTool", "random-uuid"]),
                          "kafka: cluster id").stdout.strip().splitlines()[-1]
            run(java_cmd(layout, "256m", cp, ["kafka.tools.StorageTool", "format", "-t", cluster,
                                              "-c", str(props), "--standalone"]),
                "kafka: storage format")
        spawn(layout, "kafka", java_cmd(layout, "512m", cp, ["kafka.Kafka", str(props)]))
    wait_until(lambda: port_open(port("kafka")), "kafka", layout, 90)


def connect_ready() -> bool:
    url = f"http://127.0.0.1:{port('connect')}/connector-plugins"
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            classes = {p.get("class") for p in json.load(resp)}
    except (OSError, ValueError, urllib.error.URLError):
        return False
    return all(c in classes for c in CONNECTOR_CLASSES)


def up_connect(layout: Layout) -> None:
    if read_pid(layout.pidfile("connect")) is None:
        ensure_port_free("connect")
        template = (STACK_SRC / "conf" / "connect.properties").read_text()
        props = write_config(layout, "connect.properties", template.format(
            kafka_port=port("kafka"), port=port("connect"), plugin_path=layout.plugins))
        cp = f"{layout.lib / 'kafka'}/*"
        spawn(layout, "connect", java_cmd(
            layout, "1g", cp, ["org.apache.kafka.connect.cli.ConnectDistributed", str(props)]))
    wait_until(connect_ready, "connect", layout, 180)


# ---------------------------------------------------------------- commands


SERVICES: list[tuple[str, Callable[[Layout], None]]] = [
    ("postgres", up_postgres), ("mariadb", up_mariadb), ("redis", up_redis),
    ("kafka", up_kafka), ("connect", up_connect),
]


def cmd_up(layout: Layout, only: str | None = None) -> None:
    ensure_packages()
    ensure_java()
    ensure_jars(layout)
    for name, start in SERVICES:
        if only not in (None, name):
            continue
        t0 = time.monotonic()
        start(layout)
        print(f"{name:<9} ready on 127.0.0.1:{port(name)} ({time.monotonic() - t0:.1f}s)",
              flush=True)


def stop_service(layout: Layout, name: str) -> None:
    if name == "postgres":
        if pg_running(layout):
            run(as_user("postgres", [str(PG_BIN / "pg_ctl"), "-D", str(layout.data("postgres")),
                                     "-m", "fast", "-w", "-t", "30", "stop"]), "postgres stop")
            print(f"{'postgres':<9} stopped")
        return
    pid = read_pid(layout.pidfile(name))
    if pid is not None:
        stop_pid(pid, grace=20.0 if name in ("connect", "kafka") else 10.0)
        print(f"{name:<9} stopped")
    layout.pidfile(name).unlink(missing_ok=True)


def cmd_down(layout: Layout) -> None:
    # Connect first: a worker whose broker is gone lingers.
    for name in ("connect", "kafka", "redis", "mariadb", "postgres"):
        stop_service(layout, name)


def cmd_stop(layout: Layout, name: str) -> None:
    """Stop one service and keep its data: `up` starts it again where it was."""
    stop_service(layout, name)


def service_state(layout: Layout, name: str) -> str:
    alive = pg_running(layout) if name == "postgres" else read_pid(layout.pidfile(name)) is not None
    listening = port_open(port(name))
    if alive and listening:
        return "up"
    if alive:
        return "starting"
    return "down (port taken by another process)" if listening else "down"


def cmd_status(layout: Layout) -> int:
    states = {name: service_state(layout, name) for name, _ in SERVICES}
    for name, state in states.items():
        print(f"{name:<9} {state:<10} 127.0.0.1:{port(name):<6} log {layout.log(name)}")
    return 0 if all(s == "up" for s in states.values()) else 1


def cmd_env(layout: Layout) -> None:
    """Print the environment the connectors and the daemon need, as shell assignments."""
    values = {
        "SHOP_DB_HOST": "127.0.0.1", "SHOP_DB_PORT": port("postgres"),
        "CRM_DB_HOST": "127.0.0.1", "CRM_DB_PORT": port("mariadb"),
        "CDC_DB_USER": DB_USER, "CDC_DB_PASSWORD": DB_PASSWORD,
        "KAFKA_BOOTSTRAP": f"127.0.0.1:{port('kafka')}",
        "CONNECT_URL": f"http://127.0.0.1:{port('connect')}",
        "REDIS_URL": f"redis://127.0.0.1:{port('redis')}/0",
    }
    for k, v in values.items():
        # The caller's own values win: a user pointing connectors at other hosts keeps them.
        print(f"export {k}={shlex.quote(os.environ.get(k, str(v)))}")


def cmd_tools(layout: Layout) -> None:
    """The benchmarks' tools (wrk), installed when missing."""
    ensure_packages([p for tool, pkgs in BENCH_PACKAGES.items() if shutil.which(tool) is None for p in pkgs])


def cmd_clean(layout: Layout) -> None:
    """Remove the state directory, and Postgres's files when they live outside it."""
    home = postgres_home(layout.state)
    cmd_down(layout)
    shutil.rmtree(layout.state, ignore_errors=True)
    if home is not None:
        shutil.rmtree(home, ignore_errors=True)


def main(argv: list[str]) -> int:
    commands = {"up": cmd_up, "down": cmd_down, "status": cmd_status,
                "jars": ensure_jars, "env": cmd_env, "tools": cmd_tools, "clean": cmd_clean}
    one_service = {"stop": cmd_stop, "up": cmd_up}
    if not (len(argv) == 1 and argv[0] in commands or len(argv) == 2 and argv[0] in one_service):
        print(f"usage: stackctl.py ({' | '.join(commands)}) | (stop | up) SERVICE", file=sys.stderr)
        return 2
    layout = Layout.from_env()
    try:
        if len(argv) == 2:
            if argv[1] not in PORT_ENV:
                raise StackError(f"unknown service {argv[1]!r}; one of {', '.join(PORT_ENV)}")
            one_service[argv[0]](layout, argv[1])
            return 0
        return commands[argv[0]](layout) or 0
    except StackError as exc:
        print(f"stack: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
