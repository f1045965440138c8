"""`make demo`: simulated shoppers write to the shop and the CRM; the change feed shows what streams.

Runs until Ctrl-C, or for DEMO_DURATION seconds when set. Expects the stack up and
the connectors applied (the Makefile does both first).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def main() -> int:
    duration = float(os.environ.get("DEMO_DURATION", "0"))
    procs = {
        "shoppers": subprocess.Popen([sys.executable, str(ROOT / "demo" / "shoppers.py"),
                                      "--rate", os.environ.get("DEMO_RATE", "2")],
                                     stdout=subprocess.DEVNULL),
        "tail": subprocess.Popen([str(BIN / "cdc-sync"), "tail"]),
    }
    print("demo: shoppers are writing to shop (Postgres) and crm (MariaDB); "
          "change events follow. Ctrl-C stops.", file=sys.stderr, flush=True)
    deadline = time.monotonic() + duration if duration else None
    try:
        while deadline is None or time.monotonic() < deadline:
            for name, proc in procs.items():
                if proc.poll() is not None:
                    print(f"demo: {name} exited with {proc.returncode}", file=sys.stderr)
                    return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
