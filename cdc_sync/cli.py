"""The `cdc-sync` command: parse arguments, read settings once, hand values to a service."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cdc_sync import logs, runtime, settings
from cdc_sync.core.config import Config
from cdc_sync.core.errors import CdcSyncError, ConfigError
from cdc_sync.core.mapping import normalize


def cmd_tail(args: argparse.Namespace, cfg: Config) -> int:
    from cdc_sync.services.tail import tail

    def out(line: str) -> None:
        print(line, flush=True)

    def err(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    kafka = cfg.kafka
    if args.topics:
        try:
            re.compile(args.topics)
        except re.error as exc:
            raise ConfigError(f"--topics: not a valid regular expression ({exc})") from None
        kafka = kafka.model_copy(update={"topic_pattern": args.topics})
    tail(kafka, out, err, from_beginning=args.from_beginning, include_all=args.all,
         max_events=args.max_events, timeout_s=args.timeout)
    return 0


def cmd_connectors_apply(args: argparse.Namespace, cfg: Config) -> int:
    from cdc_sync.adapters.connect import ConnectClient
    from cdc_sync.services.connectors import apply, load_specs

    specs = load_specs([Path(p) for p in args.files], os.environ)
    client = ConnectClient(args.connect_url or cfg.connect.url)
    try:
        results = apply(specs, client, timeout=args.timeout)
    finally:
        client.close()
    for r in results:
        print(f"{r.name:<20} {r.state:<8} tasks {','.join(r.tasks):<10} "
              f"{'updated' if r.changed else 'unchanged'}")
    return 0


def cmd_connectors_status(args: argparse.Namespace, cfg: Config) -> int:
    from cdc_sync.adapters.connect import ConnectClient
    from cdc_sync.services.doctor import connector_verdicts

    client = ConnectClient(args.connect_url or cfg.connect.url, timeout=10)
    try:
        verdicts = [v for v in connector_verdicts(client)
                    if args.name is None or v.check == f"connector {args.name}"]
    finally:
        client.close()
    if args.name is not None and not verdicts:
        raise CdcSyncError(f"no connector named {args.name}")
    print_verdicts(verdicts)
    return 1 if any(v.status == "fail" for v in verdicts) else 0


def cmd_connectors_restart(args: argparse.Namespace, cfg: Config) -> int:
    from cdc_sync.adapters.connect import ConnectClient
    from cdc_sync.services.connectors import wait_running

    client = ConnectClient(args.connect_url or cfg.connect.url, timeout=30)
    try:
        status = client.status(args.name)
        if status is None:
            raise CdcSyncError(f"no connector named {args.name}")
        states = (status.get("connector", {}).get("state"),
                  *[t.get("state") for t in status.get("tasks", [])])
        if "PAUSED" in states:
            client.resume(args.name)
        client.restart(args.name)
        applied = wait_running(client, args.name, True, args.timeout, time.sleep)
    finally:
        client.close()
    print(f"{args.name:<20} {applied.state:<8} tasks {','.join(applied.tasks)}")
    return 0


def print_verdicts(verdicts: Sequence[Any]) -> None:
    for v in verdicts:
        print(f"{v.status.upper():<5} {v.check:<32} {v.detail}")
        if v.todo and v.status != "ok":
            print(f"{'':<5} {'':<32} -> {v.todo}")


def cmd_doctor(args: argparse.Namespace, cfg: Config) -> int:
    from cdc_sync.adapters.connect import ConnectClient
    from cdc_sync.services.doctor import Limits, doctor

    client = ConnectClient(cfg.connect.url, timeout=10)
    try:
        verdicts = doctor(cfg, client, Limits(max_slot_wal_bytes=int(args.max_slot_wal_mb * (1 << 20)),
                                              max_lag_records=args.max_lag or cfg.api.max_lag_records))
    finally:
        client.close()
    print_verdicts(verdicts)
    failed = [v for v in verdicts if v.status == "fail"]
    print(f"{len(failed)} failed, {sum(v.status == 'warn' for v in verdicts)} warnings, "
          f"{sum(v.status == 'ok' for v in verdicts)} ok", file=sys.stderr)
    return 1 if failed else 0


def iso_time(text: str) -> datetime:
    """An ISO 8601 time for --as-of; UTC when it has no offset."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def print_json(doc: Any) -> None:
    print(json.dumps(doc, indent=2, default=str, ensure_ascii=False))


def cmd_migrate(args: argparse.Namespace, cfg: Config) -> int:
    from cdc_sync.services.inspection import migrate

    applied = migrate(cfg)
    print(f"applied {', '.join(applied)}" if applied else "profile store schema is up to date")
    return 0


def cmd_run(args: argparse.Namespace, cfg: Config) -> int:
    from cdc_sync.services.dispatcher import Dispatcher
    from cdc_sync.services.sync import Consumer
    from cdc_sync.services.telemetry import Telemetry

    sync, dispatch = args.role in ("all", "sync"), args.role in ("all", "dispatch")
    if sync and not cfg.mapping.tables:
        raise ConfigError("mapping.tables is empty: nothing would be applied (pass --config FILE "
                          "or set CDC_SYNC_CONFIG; see docs/mapping.md)")
    if args.role == "dispatch" and not cfg.delivery.destinations:
        raise ConfigError("delivery.destinations is empty: nothing to dispatch (docs/delivery.md)")
    telemetry = Telemetry(cfg, consumes=sync)
    dispatcher = Dispatcher(cfg, settings.credentials(cfg.delivery), telemetry) if dispatch else None
    consumer = Consumer(cfg, idle_exit_s=args.idle_exit, telemetry=telemetry) if sync else None
    runtime.tune_gc()  # after start-up built what it keeps: never walked again
    runtime.tune_threads()
    telemetry.serve()
    if dispatcher is not None:
        dispatcher.start()
    try:
        if consumer is not None:
            consumer.run()
        elif dispatcher is not None:
            runtime.wait_for_signal()
    finally:
        if dispatcher is not None:
            dispatcher.stop()
        telemetry.close()
    return 0


def identifier_arg(args: argparse.Namespace) -> tuple[str, str] | None:
    if args.email:
        return ("email", normalize(args.email, "email"))
    if args.identifier:
        type_, sep, value = args.identifier.partition("=")
        if not sep or not type_ or not value:
            raise ConfigError(f"--identifier wants TYPE=VALUE, got {args.identifier!r}")
        return (type_, value)
    return None


def cmd_profile_show(args: argparse.Namespace, cfg: Config) -> int:
    from cdc_sync.services.inspection import show

    print_json(show(cfg, args.id, identifier_arg(args)))
    return 0


def cmd_profile_history(args: argparse.Namespace, cfg: Config) -> int:
    from cdc_sync.services.inspection import history

    for doc in history(cfg, args.id, identifier_arg(args), args.field, args.limit):
        print(json.dumps(doc, default=str, ensure_ascii=False))
    return 0


def cmd_profile_restore(args: argparse.Namespace, cfg: Config) -> int:
    from cdc_sync.services.inspection import restore

    count = restore(cfg, args.profile_id, args.as_of)
    print(f"profile {args.profile_id}: {count} field(s) restored to {args.as_of.isoformat()}")
    return 0


def cmd_dlq_list(args: argparse.Namespace, cfg: Config) -> int:
    from cdc_sync.services.inspection import dead_letters

    for doc in dead_letters(cfg, args.limit):
        print(json.dumps(doc, ensure_ascii=False))
    return 0


def cmd_dlq_replay(args: argparse.Namespace, cfg: Config) -> int:
    from cdc_sync.services.replay import replay

    result = replay(cfg, ids=args.id or (), reason=args.reason)
    print(f"replayed {result.replayed} dead letter(s)")
    if result.still_failing:
        counts = ", ".join(f"{error} {n}" for error, n in sorted(result.still_failing.items()))
        total = sum(result.still_failing.values())
        print(f"still failing {total}: {counts} (`cdc-sync dlq list` shows the reasons)")
        return 1
    return 0


def cmd_triggers_pending(args: argparse.Namespace, cfg: Config) -> int:
    from cdc_sync.services.explain import pending

    doc = pending(cfg, args.limit)
    if args.json:
        print_json(doc)
        return 0
    held = doc["slowest_partition"]
    slowest = f"; slowest partition {held['topic']}/{held['partition']} at {held['at']}" if held else ""
    lateness = doc["allowed_lateness_s"]
    print(f"watermark {doc['watermark'] or 'none yet'} (allowed lateness {lateness:g}s{slowest})")
    for source, at in doc["heartbeats"].items():
        print(f"heartbeat {source} {at}")
    print(f"{'rule':<16} {'subject':<12} {'due':<28} {'state':<10} changed")
    for x in doc["timers"]:
        due = x.get("due_at", "")
        print(f"{x['rule']:<16} {x['subject']:<12} {due:<28} {x['state']:<10} {x['changed_at']}")
    return 0


def cmd_triggers_explain(args: argparse.Namespace, cfg: Config) -> int:
    from cdc_sync.services.explain import explain_cart

    print_json(explain_cart(cfg, args.cart))
    return 0


def cmd_outbox_list(args: argparse.Namespace, cfg: Config) -> int:
    from cdc_sync.services.deliveries import listing

    rows, disabled = listing(cfg, args.limit, args.status, args.destination, args.type)
    for name, why in sorted(disabled.items()):
        print(f"cdc-sync: destination {name} is DISABLED ({why}); nothing is sent to it until "
              f"`cdc-sync destinations enable {name}`", file=sys.stderr)
    for doc in rows:
        print(json.dumps(doc, default=str, ensure_ascii=False))
    return 0


def cmd_outbox_replay(args: argparse.Namespace, cfg: Config) -> int:
    from cdc_sync.services.deliveries import replay

    count = replay(cfg, args.status or ["dead"], args.id, args.destination)
    print(f"queued {count} delivery(ies) again")
    return 0 if count else 1


def cmd_destinations_list(args: argparse.Namespace, cfg: Config) -> int:
    from cdc_sync.services.deliveries import destinations

    for doc in destinations(cfg):
        print(json.dumps(doc, ensure_ascii=False))
    return 0


def cmd_destinations_enable(args: argparse.Namespace, cfg: Config) -> int:
    from cdc_sync.services.deliveries import enable

    if enable(cfg, args.name):
        print(f"destination {args.name} enabled: its pending deliveries go out again")
        return 0
    print(f"destination {args.name} was not disabled", file=sys.stderr)
    return 1


def cmd_sink(args: argparse.Namespace, cfg: Config) -> int:
    from cdc_sync.core.webhooks import secret_key
    from cdc_sync.services.sink import serve

    keys = []
    for var in args.secret_env or ["CDC_SYNC_SINK_SECRET"]:
        if not os.environ.get(var):
            raise ConfigError(f"--secret-env: ${var} is not set (the whsec_ secret the sender signs with)")
        try:
            keys.append(secret_key(os.environ[var]))
        except ValueError as exc:
            raise ConfigError(f"--secret-env: ${var}: {exc}") from None
    stop = runtime.stop_event()
    summary = serve(args.host, args.port, keys, args.record,
                    lambda url: print(f"sink: receiving on {url}", file=sys.stderr, flush=True), stop)
    print(json.dumps(summary))
    return 0


def cmd_api(args: argparse.Namespace, cfg: Config) -> int:
    from cdc_sync.services.api import serve

    serve(cfg, args.config, args.host, args.port, args.workers, args.log_level, args.log_json)
    return 0


def cmd_api_token(args: argparse.Namespace, cfg: Config) -> int:
    from cdc_sync.core.tokens import hash_token, new_token

    token = new_token()
    entry = {"api": {"tokens": {args.name: {"hash": hash_token(token), "scopes": args.scopes}}}}
    if args.token_file:
        fd = os.open(args.token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # an existing file keeps its mode otherwise
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        print(f"# the token is in {args.token_file} (mode 0600); add this to the config file:",
              file=sys.stderr)
    else:
        print(f"# the token, shown once (give it to the caller): {token}", file=sys.stderr)
        print("# add this to the config file (it holds only a salted hash):", file=sys.stderr)
    import yaml

    print(yaml.safe_dump(entry, sort_keys=False), end="")
    return 0


def cmd_api_openapi(args: argparse.Namespace, cfg: Config) -> int:
    from cdc_sync.services.api import openapi_document

    print(json.dumps(openapi_document(cfg), indent=2, sort_keys=True))
    return 0


def add_api_commands(sub: Any) -> None:
    p = sub.add_parser("api", help="the send-time profile API (serve, or make a token, or print OpenAPI)")
    p.add_argument("--host", help="listen address (default: api.host)")
    p.add_argument("--port", type=int, help="listen port (default: api.port, 8080)")
    p.add_argument("--workers", type=int, default=1,
                   help="worker processes (one per core; each reads the config file itself)")
    p.set_defaults(func=cmd_api)
    asub = p.add_subparsers(dest="action")
    t = asub.add_parser("token", help="make a bearer token and print the config entry with its hash")
    t.add_argument("--name", default="esp", help="who holds it (the key under api.tokens)")
    t.add_argument("--scopes", nargs="+", choices=["profiles:read", "admin"], default=["profiles:read"])
    t.add_argument("--token-file", help="write the token here (mode 0600) instead of showing it")
    t.set_defaults(func=cmd_api_token)
    o = asub.add_parser("openapi", help="print the API's OpenAPI document (docs/openapi.json)")
    o.set_defaults(func=cmd_api_openapi)


def add_trigger_commands(sub: Any) -> None:
    p = sub.add_parser("triggers", help="scheduled timers, and why a cart did or did not fire")
    tsub = p.add_subparsers(dest="action", required=True)
    t = tsub.add_parser("pending", help="scheduled and held timers, soonest first, and the watermark")
    t.add_argument("--limit", type=int, default=100)
    t.add_argument("--json", action="store_true", help="one JSON document")
    t.set_defaults(func=cmd_triggers_pending)
    t = tsub.add_parser("explain", help="every timer of a cart and why it ended, as JSON")
    t.add_argument("--cart", required=True, help="the cart's id (its entity id)")
    t.set_defaults(func=cmd_triggers_explain)
    add_delivery_commands(sub)


def add_delivery_commands(sub: Any) -> None:
    statuses = ["pending", "sent", "dead", "cancelled"]
    p = sub.add_parser("outbox", help="triggers written for delivery, and where they went")
    osub = p.add_subparsers(dest="action", required=True)
    o = osub.add_parser("list", help="the newest triggers with their deliveries, as JSON lines")
    o.add_argument("--limit", type=int, default=50)
    o.add_argument("--type", help="only this trigger type, e.g. cart.abandoned")
    o.add_argument("--status", choices=statuses, help="only triggers with a delivery in this status")
    o.add_argument("--destination", help="only triggers with a delivery to this destination")
    o.set_defaults(func=cmd_outbox_list)
    o = osub.add_parser("replay", help="send ended deliveries again (dead ones by default)")
    which = o.add_mutually_exclusive_group(required=True)
    which.add_argument("id", nargs="?", help="a trigger's id (as `outbox list` shows)")
    which.add_argument("--destination", help="every delivery of this destination in --status")
    o.add_argument("--status", choices=statuses[1:], action="append",
                   help="which ended deliveries (repeatable; default: dead)")
    o.set_defaults(func=cmd_outbox_replay)
    p = sub.add_parser("destinations", help="webhook destinations: state and deliveries")
    dsub = p.add_subparsers(dest="action", required=True)
    d = dsub.add_parser("list", help="each destination, whether it is disabled, its deliveries by status")
    d.set_defaults(func=cmd_destinations_list)
    d = dsub.add_parser("enable", help="send to a destination again after it answered 410")
    d.add_argument("name")
    d.set_defaults(func=cmd_destinations_enable)
    p = sub.add_parser("sink", help="a local ESP webhook receiver (demo, tests): verifies, records")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9900)
    p.add_argument("--secret-env", action="append", metavar="VAR",
                   help="environment variable holding a whsec_ secret (repeatable;"
                        " default CDC_SYNC_SINK_SECRET)")
    p.add_argument("--record", type=Path, help="append every request to this file as a JSON line")
    p.set_defaults(func=cmd_sink)


def add_profile_selector(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--id", type=int, help="profile id (an alias resolves to its survivor)")
    group.add_argument("--email", help="email address (normalised: trimmed, lower-case)")
    group.add_argument("--identifier", help="TYPE=VALUE, e.g. user_id=42 or crm_contact_id=7")


def add_store_commands(sub: Any) -> None:
    p = sub.add_parser("migrate", help="create or upgrade the profile store schema")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("run", help="consume change events into profiles until SIGTERM")
    p.add_argument("--idle-exit", type=float, metavar="SECONDS",
                   help="exit 0 once no record has arrived for this long (catch-up jobs, tests)")
    p.add_argument("--role", choices=["all", "sync", "dispatch"], default="all",
                   help="sync: consume changes; dispatch: deliver the outbox; all: both (default)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("profile", help="inspect or repair a profile")
    psub = p.add_subparsers(dest="action", required=True)
    s = psub.add_parser("show", help="the profile as JSON")
    add_profile_selector(s)
    s.set_defaults(func=cmd_profile_show)
    h = psub.add_parser("history", help="applied field changes, newest first, as JSON lines")
    add_profile_selector(h)
    h.add_argument("--field", help="only this field")
    h.add_argument("--limit", type=int, default=100)
    h.set_defaults(func=cmd_profile_history)
    r = psub.add_parser("restore", help="roll a profile back to a time, recorded as new changes")
    r.add_argument("profile_id", type=int)
    r.add_argument("--as-of", required=True, type=iso_time,
                   help="ISO time (source commit time), UTC if no offset")
    r.set_defaults(func=cmd_profile_restore)

    p = sub.add_parser("dlq", help="dead letters")
    dsub = p.add_subparsers(dest="action", required=True)
    d = dsub.add_parser("list", help="the newest dead letters as JSON lines")
    d.add_argument("--limit", type=int, default=50)
    d.set_defaults(func=cmd_dlq_list)
    d = dsub.add_parser("replay", help="apply dead letters again with the current config;"
                                       " remove those that apply")
    which = d.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", type=int, action="append", help="a dead letter's id (repeatable)")
    which.add_argument("--reason", help="those whose reason contains TEXT (case-insensitive)")
    which.add_argument("--all", action="store_true", help="every dead letter")
    d.set_defaults(func=cmd_dlq_replay)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cdc-sync", description=__doc__)
    parser.add_argument("--config", type=Path, help="YAML config file (default: $CDC_SYNC_CONFIG)")
    parser.add_argument("--log-level", type=str.upper, default=os.environ.get("CDC_SYNC_LOG_LEVEL", "INFO"),
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--log-json", action="store_true", help="JSON log lines (for collectors)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("tail", help="print decoded change events as JSON lines")
    p.add_argument("--topics", help="topic regex (default: kafka.topic_pattern)")
    p.add_argument("--from-beginning", action="store_true", help="start at the oldest offsets")
    p.add_argument("--all", action="store_true", help="also heartbeats and transaction markers")
    p.add_argument("--max-events", type=int, help="stop after this many lines")
    p.add_argument("--timeout", type=float, help="stop after this many seconds")
    p.set_defaults(func=cmd_tail)

    p = sub.add_parser("connectors", help="manage Kafka Connect connectors")
    csub = p.add_subparsers(dest="action", required=True)
    a = csub.add_parser("apply", help="create or update connectors from JSON files (${ENV} filled)")
    a.add_argument("files", nargs="+", help="connector files: {name, config}")
    a.add_argument("--connect-url", help="Kafka Connect REST URL (default: connect.url)")
    a.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for RUNNING")
    a.set_defaults(func=cmd_connectors_apply)
    a = csub.add_parser("status", help="each connector's and task's state; exits 1 if one is not running")
    a.add_argument("name", nargs="?", help="one connector (default: all)")
    a.add_argument("--connect-url", help="Kafka Connect REST URL (default: connect.url)")
    a.set_defaults(func=cmd_connectors_status)
    a = csub.add_parser("restart", help="resume a paused connector, restart it and its tasks,"
                                        " wait for RUNNING")
    a.add_argument("name")
    a.add_argument("--connect-url", help="Kafka Connect REST URL (default: connect.url)")
    a.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for RUNNING")
    a.set_defaults(func=cmd_connectors_restart)
    p = sub.add_parser("doctor", help="check connectors, slots, lag, dead letters and deliveries;"
                                      " exits 1 when a check fails")
    p.add_argument("--max-slot-wal-mb", type=float, default=1024.0,
                   help="a replication slot holding back more WAL than this fails (default 1024)")
    p.add_argument("--max-lag", type=int,
                   help="consumer lag in records that fails (default: api.max_lag_records)")
    p.set_defaults(func=cmd_doctor)
    add_store_commands(sub)
    add_trigger_commands(sub)
    add_api_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace, Config], int] = args.func
    logs.configure(args.log_level, json=args.log_json)
    try:
        cfg = settings.load(args.config)
        return func(args, cfg)
    except ConfigError as exc:
        print(f"cdc-sync: config error: {exc}", file=sys.stderr)
        return 2
    except CdcSyncError as exc:
        print(f"cdc-sync: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
