"""Process-wide interpreter settings for the daemon, set once at each process's entry point."""

from __future__ import annotations

import gc
import signal
import sys
import threading


def tune_gc() -> None:
    """A batch makes hundreds of thousands of small acyclic objects that refcounting frees; the
    cycle collector's default (a pass every 700 allocations, walking every young object) spent
    a third of the daemon's time on them. Collect rarely, and never walk what start-up built."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def tune_threads() -> None:
    """The applier thread mostly waits on Postgres; when an answer arrives it should get the
    interpreter back soon, not after another thread's default 5 ms slice."""
    sys.setswitchinterval(0.0005)


def stop_event() -> threading.Event:
    """An event set by SIGTERM or SIGINT (a process that only waits: the dispatcher, the sink)."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def wait_for_signal() -> None:
    """Block until SIGTERM or SIGINT."""
    stop = stop_event()
    while not stop.wait(1.0):
        pass
