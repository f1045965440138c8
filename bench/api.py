"""`make bench`: the send-time API, cache hits and misses, under wrk.

A fresh store gets `--profiles` people; `cdc-sync api` serves it as its own process, and wrk
(a separate program, C, one thread) drives it over loopback with `--connections` open
connections as fast as they go (a closed loop: wrk's percentiles are of the requests it sent,
so a stall delays the next request rather than showing as many slow ones).

- hits: ids from a small set asked once before the run, so every answer comes from Redis;
- misses: each request asks for a profile never asked before, so each reads Postgres and fills
  the cache (the run stops before the ids run out).

Prints `<name>: <value> <unit>` lines and writes them to bench/results/api.json.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.apply import cpu_seconds, report  # noqa: E402
from cdc_sync.adapters import store as store_mod  # noqa: E402
from cdc_sync.core.tokens import hash_token, new_token  # noqa: E402
from tests import storedb  # noqa: E402
from tests.core.test_reconcile import USERS, change  # noqa: E402

HOT = 200  # profiles the hit run asks for

LUA = """
local first, last, random = {first}, {last}, {random}
local n = first - 1
request = function()
  local id
  if random then id = math.random(first, last) else n = n + 1; id = n end
  return wrk.format("GET", "/v1/profiles/" .. id, {{["Authorization"] = "Bearer {token}"}})
end
"""


def fill(dsn: str, profiles: int) -> list[int]:
    """`profiles` people with a few attributes; returns their ids in order."""
    store = store_mod.ProfileStore(store_mod.connect(dsn), {})
    try:
        tag = uuid.uuid4().hex[:6]
        for start in range(1, profiles + 1, 2000):
            store.apply([change(USERS, k, k,
                                ids=[("user_id", str(k)), ("email", f"api-{tag}-{k}@example.test")],
                                attrs={"first_name": f"Name{k}", "city": "Graz", "country": "AT"})
                         for k in range(start, min(profiles, start + 1999) + 1)], [])
        return [r[0] for r in store.conn.execute("SELECT id FROM profiles ORDER BY id")]
    finally:
        store.conn.close()


def wrk(url: str, script: Path, seconds: float, connections: int) -> dict[str, float]:
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds:.0f}s", "--latency",
                          "-s", str(script), url],
                         capture_output=True, text=True, check=True, timeout=seconds + 60).stdout

    def ms(label: str) -> float:
        m = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        assert m, out
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    assert rate, out
    return {"rate": float(rate.group(1)), "p50": ms("50"), "p99": ms("99"),
            "errors": float(errors.group(1)) if errors else 0.0}


def children(pid: int) -> list[int]:
    """The worker processes of uvicorn's supervisor."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profiles", type=int, default=int(os.environ.get("BENCH_API_PROFILES", 30000)))
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=4,
                        help="open connections (4: the most requests a second here before queueing)")
    parser.add_argument("--workers", type=int, default=2,
                        help="API worker processes (2: one a core here)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "api.json")
    args = parser.parse_args()
    token = new_token()
    figures: dict[str, tuple[float, str]] = {}
    with tempfile.TemporaryDirectory(prefix="cdc-sync-bench-api-") as tmp_name, \
            storedb.fresh_database("cdc_sync_bench") as dsn:
        tmp = Path(tmp_name)
        ids = fill(dsn, args.profiles)
        port = 18000 + uuid.uuid4().int % 1000
        config = storedb.write_config(tmp / "api.yaml", store={"dsn": dsn}, triggers=None, api={
            "tokens": {"bench": {"hash": hash_token(token), "scopes": ["profiles:read"]}}})
        api = subprocess.Popen([sys.executable, "-m", "cdc_sync.cli", "--config", str(config), "api",
                                "--port", str(port), "--workers", str(args.workers)],
                               stdout=subprocess.DEVNULL,
                               stderr=(tmp / "api.log").open("wb"))
        base = f"http://127.0.0.1:{port}"
        try:
            with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as client:
                for _ in range(100):
                    try:
                        if client.get("/readyz").status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    time.sleep(0.2)
                started = time.monotonic()  # every worker up: else wrk's connections all go to the first
                while (tmp / "api.log").read_text().count("Application startup complete") < args.workers:
                    assert time.monotonic() - started < 60, (tmp / "api.log").read_text()[-2000:]
                    time.sleep(0.2)
                for pid in ids[:HOT]:  # cached now
                    assert client.get(f"/v1/profiles/{pid}").status_code == 200
            for name, first, last, random in (("cache hit", ids[0], ids[HOT - 1], "true"),
                                              ("cache miss", ids[HOT], ids[-1], "false")):
                script = tmp / f"{name.replace(' ', '-')}.lua"
                script.write_text(LUA.format(first=first, last=last, random=random, token=token))
                pids = [api.pid, *children(api.pid)]
                cpu = cpu_seconds(pids)
                got = wrk(base, script, args.seconds, args.connections)
                cpu = cpu_seconds(pids) - cpu
                if name == "cache miss":
                    asked = got["rate"] * args.seconds
                    assert asked < len(ids) - HOT, "the miss run outran its profiles: raise --profiles"
                figures |= {f"api {name} requests/s": (got["rate"], "requests/s"),
                            f"api {name} p50": (got["p50"], "ms"),
                            f"api {name} p99": (got["p99"], "ms"),
                            f"api {name} errors": (got["errors"], "responses"),
                            f"api {name} server CPU per request": (
                                cpu / max(1.0, got["rate"] * args.seconds) * 1e6, "µs")}
        finally:
            api.terminate()
            api.wait(timeout=10)
    report(figures, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
