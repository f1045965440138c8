"""The `cdc-sync` command: parse arguments, read settings once, hand values to a service."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from cdc_sync import settings
from cdc_sync.core.config import Config
from cdc_sync.core.errors import CdcSyncError, ConfigError


def cmd_tail(args: argparse.Namespace, cfg: Config) -> int:
    from cdc_sync.services.tail import tail

    def out(line: str) -> None:
        print(line, flush=True)

    def err(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    kafka = cfg.kafka
    if args.topics:
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cdc-sync", description=__doc__)
    parser.add_argument("--config", type=Path, help="YAML config file (default: $CDC_SYNC_CONFIG)")
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace, Config], int] = args.func
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
