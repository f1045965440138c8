"""`cdc-sync tail` prints the change events of the source topics as JSON lines."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid

import pytest

pytestmark = pytest.mark.stack


def test_tail_prints_a_decoded_insert_as_one_json_line(shop_db):
    proc = subprocess.Popen([sys.executable, "-m", "cdc_sync.cli", "tail", "--topics",
                             r"^shop\.public\.users$", "--max-events", "1", "--timeout", "90"],
                            stdout=subprocess.PIPE, text=True)

    def write_until_seen() -> None:  # tail starts at the end of the topic: write until it has joined
        for _ in range(120):
            if proc.poll() is not None:
                return
            shop_db.execute("INSERT INTO users (email, first_name) VALUES (%s, 'Tess')",
                            (f"tail.{uuid.uuid4().hex[:12]}@example.com",))
            time.sleep(0.5)

    writer = threading.Thread(target=write_until_seen)
    writer.start()
    out, _ = proc.communicate(timeout=120)
    writer.join()
    assert proc.returncode == 0
    doc = json.loads(out.splitlines()[0])
    assert doc["kind"] == "ChangeEvent" and doc["op"] == "c" and doc["table"] == "public.users"
    assert doc["after"]["first_name"] == "Tess" and doc["source"] == "shop"
    assert doc["ref"]["topic"] == "shop.public.users" and isinstance(doc["position"], list)
