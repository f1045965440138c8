"""`cdc-sync sink`: a local ESP webhook receiver for the demo, the tests and the benchmark.

It verifies each request's Standard Webhooks signature, writes every request as a JSON line
(`--record FILE`), and keeps a summary that counts each `webhook-id` once. Told through
`POST /_control`, it answers one path (or every path) badly for a while: a status (500, 429
with a Retry-After, 410…) or a hang.

    curl -X POST localhost:9900/_control -d '{"path": "/esp", "status": 500, "seconds": 20}'
    curl localhost:9900/_summary

Its record holds the bodies it received, as an ESP's would: it is data, not a log, and stays
on this machine.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qs, urlsplit

import orjson

from cdc_sync.core import webhooks as wh


@dataclass(slots=True)
class Mode:
    """How to answer requests to a path, until `until` (monotonic)."""

    until: float
    status: int = 500
    retry_after: str | None = None
    hang: bool = False


@dataclass
class Receiver:
    """What the sink has seen, and how it answers now. Guarded by `lock`."""

    keys: list[bytes]
    record: IO[bytes] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    modes: dict[str, Mode] = field(default_factory=dict)  # path prefix ("" for every path) -> mode
    # (path, webhook-id, status answered, signature verified, trigger type), in arrival order
    seen: list[tuple[str, str, int, bool, str | None]] = field(default_factory=list)

    def mode_for(self, path: str, now: float) -> Mode | None:
        with self.lock:
            for prefix, mode in sorted(self.modes.items(), key=lambda m: -len(m[0])):
                if path.startswith(prefix) and now < mode.until:
                    return mode
        return None

    def note(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.seen.append((entry["path"], entry["webhook_id"], entry["status"], entry["verified"],
                              entry.get("type")))
            entry["n"] = len(self.seen)
            if self.record is not None:
                self.record.write(orjson.dumps(entry) + b"\n")
                self.record.flush()

    def summary(self, path: str = "") -> dict[str, Any]:
        """Requests to paths under `path`; `delivered` counts each webhook-id answered 2xx once."""
        with self.lock:
            seen = [s for s in self.seen if s[0].startswith(path)]
        accepted: Counter[str] = Counter()
        by_type: Counter[str] = Counter()
        for _, msg_id, status, ok, type_ in seen:
            if ok and 200 <= status < 300:
                if msg_id not in accepted and type_:
                    by_type[type_] += 1
                accepted[msg_id] += 1
        return {"requests": len(seen), "delivered": len(accepted),
                "duplicates": sum(accepted.values()) - len(accepted),
                "unverified": sum(1 for s in seen if not s[3]),
                "by_status": {str(k): v for k, v in sorted(Counter(s[2] for s in seen).items())},
                "by_type": dict(sorted(by_type.items()))}


class _Server(ThreadingHTTPServer):
    receiver: Receiver
    daemon_threads = True


class Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive, as ESP endpoints offer
    disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms delayed-ACK stall

    def log_message(self, format: str, *args: Any) -> None:  # the record says it all
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        url = urlsplit(self.path)
        if url.path == "/_summary":  # ?path=/prefix: only requests to paths under it
            prefix = parse_qs(url.query).get("path", [""])[0]
            self._answer(200, orjson.dumps(self.server.receiver.summary(prefix)))
        else:
            self._answer(404, b'{"error": "not found"}')

    def do_DELETE(self) -> None:  # noqa: N802
        if self.path == "/_control":
            with self.server.receiver.lock:
                self.server.receiver.modes.clear()
            self._answer(200, b"{}")
        else:
            self._answer(404, b'{"error": "not found"}')

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        if self.path == "/_control":
            self._control(body)
        else:
            self._webhook(body)

    def _control(self, body: bytes) -> None:
        try:
            doc = orjson.loads(body)
            mode = Mode(time.monotonic() + float(doc.get("seconds", 3600)), int(doc.get("status", 500)),
                        None if doc.get("retry_after") is None else str(doc["retry_after"]),
                        bool(doc.get("hang", False)))
        except (orjson.JSONDecodeError, TypeError, ValueError, AttributeError):
            self._answer(400, b'{"error": "want {path, status, seconds, retry_after, hang}"}')
            return
        with self.server.receiver.lock:
            self.server.receiver.modes[str(doc.get("path", ""))] = mode
        self._answer(200, b"{}")

    def _webhook(self, body: bytes) -> None:
        h = self.headers
        msg_id = h.get("webhook-id", "")
        verified = wh.verify(self.server.receiver.keys, msg_id, h.get("webhook-timestamp", ""),
                             h.get("webhook-signature", ""), body, time.time())
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            doc = None
        mode = self.server.receiver.mode_for(self.path, time.monotonic())
        entry: dict[str, Any] = {
            "at": time.time(), "path": self.path, "webhook_id": msg_id, "verified": verified,
            "timestamp": h.get("webhook-timestamp"), "idempotency_key": h.get("idempotency-key"),
            "user_agent": h.get("user-agent"), "signature": h.get("webhook-signature"),
            "raw": body.decode("utf-8", "replace"),
            "type": doc.get("type") if isinstance(doc, dict) else None, "body": doc}
        if mode is not None and mode.hang:
            while time.monotonic() < mode.until:  # the sender's timeout ends it first
                time.sleep(0.05)
            entry.update(status=599, hung=True)
            self.server.receiver.note(entry)
            self.close_connection = True
            return
        status = 401 if not verified else (mode.status if mode is not None else 200)
        entry["status"] = status
        self.server.receiver.note(entry)
        extra = {"retry-after": mode.retry_after} if mode is not None and mode.retry_after else {}
        self._answer(status, b'{"ok": true}' if status < 300 else b'{"error": "told to fail"}', extra)

    def _answer(self, status: int, body: bytes, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


def serve(host: str, port: int, keys: list[bytes], record: Path | None,
          ready: Callable[[str], None] = lambda _: None,
          stop: threading.Event | None = None) -> dict[str, Any]:
    """Receive until `stop` is set (or KeyboardInterrupt); returns the summary."""
    out = record.open("ab") if record is not None else None
    receiver = Receiver(keys, out)
    server = _Server((host, port), Handler)
    server.receiver = receiver
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    ready(f"http://{host}:{server.server_address[1]}")
    try:
        (stop or threading.Event()).wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        server.server_close()
        if out is not None:
            out.close()
    return receiver.summary()
