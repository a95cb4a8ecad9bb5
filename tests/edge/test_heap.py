"""The C heap's free pages go back to the kernel after a burst (edge/heap.py).

A real burst in a real process: compressors allocated by a worker thread between
long-lived buffers (as a fold's compressors lie between SQLite's cache pages), freed,
and the RSS read from /proc before and after the call.
"""

from __future__ import annotations

import platform
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

import edge.daemon_config
import edge.store
from edge.config import ConfigError
from edge.heap import give_back_free_memory
from edge.store import Store
from vocab.model import Reading

GLIBC = platform.libc_ver()[0] == "glibc"

BURST = """
import os, threading, zlib
from edge.heap import give_back_free_memory

def rss():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

kept, found = [], {}

def burst():
    compressors = []
    for n in range(400):
        compressors.append(zlib.compressobj(6, zlib.DEFLATED, 11, 3))
        compressors[-1].compress(os.urandom(100))
        kept.append(bytes(700 + n))  # malloc'd (over pymalloc's 512 B), and kept
    del compressors
    found["before"] = rss()
    found["trimmed"] = give_back_free_memory()
    found["after"] = rss()

worker = threading.Thread(target=burst)
worker.start()
worker.join()
print(found["before"] - found["after"], found["trimmed"])
"""


@pytest.mark.skipif(not GLIBC, reason="malloc_trim is glibc's")
def test_a_burst_freed_between_long_lived_buffers_leaves_the_rss() -> None:
    out = subprocess.run([sys.executable, "-c", BURST], capture_output=True, text=True,
                         check=True, timeout=60).stdout.split()
    given_back, trimmed = int(out[0]), out[1]
    assert trimmed == "True"
    # 400 compressors of ~13 KiB each: without the trim, free() keeps them all.
    assert given_back > 2 * 2**20


def test_it_says_whether_it_could() -> None:
    assert give_back_free_memory() is GLIBC


def _calls(monkeypatch: pytest.MonkeyPatch, module: object) -> list[int]:
    calls: list[int] = []
    monkeypatch.setattr(module, "give_back_free_memory", lambda: calls.append(1) or True)
    return calls


def test_a_fold_gives_its_memory_back_whether_or_not_it_succeeds(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _calls(monkeypatch, edge.store)
    store = Store(tmp_path / "edge.db")
    now = int(time.time() * 1000)
    store.commit_cycles([([Reading(f"piezo-{d}", "p0", now, 1.0, "m", "good")], [])
                         for d in range(5)])
    assert store.fold() == 5
    assert len(calls) == 1

    def full(conn: sqlite3.Connection) -> int:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(edge.store, "fold", full)
    assert store.fold() == 0  # deferred to the next maintenance
    assert len(calls) == 2


def test_a_reload_that_parses_in_place_gives_the_parse_back_even_when_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _calls(monkeypatch, edge.daemon_config)
    # The reload's own process cannot start: the file is parsed here instead.
    monkeypatch.setattr(edge.daemon_config.sys, "executable", str(tmp_path / "missing"))
    bad = tmp_path / "site.yaml"
    bad.write_text("site: [\n")
    with capture_logs() as logs, pytest.raises(ConfigError) as refused:
        edge.daemon_config.load_for_reload(bad)
    assert "site.yaml:2: YAML syntax error" in str(refused.value)
    assert calls == [1]
    [event] = [e for e in logs if e["event"] == "reload_parsed_in_place"]
    assert event["reason"].startswith(f"cannot start {tmp_path / 'missing'}: ")


COLLECTED_UNDER_LOAD = """
import gc, sys, weakref
sys.path.insert(0, {root!r})
from edge.heap import COLLECTOR_THRESHOLD, tune_collector
tune_collector()
assert gc.get_threshold()[0] == COLLECTOR_THRESHOLD
freed = []
class Cycle:
    def __init__(self):
        self.me = self
for n in range(5 * COLLECTOR_THRESHOLD):
    weakref.finalize(Cycle(), freed.append, n)
# Cycles are collected without gc.collect(): how many were made and not yet freed.
print(len(freed), 5 * COLLECTOR_THRESHOLD - len(freed))
"""


def test_the_daemon_tunes_the_collector_before_it_loads_anything(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import gc

    import edge.cli
    from edge.heap import COLLECTOR_THRESHOLD

    seen: list[tuple[int, int, int]] = []

    def load(*args: object, **kwargs: object) -> None:
        seen.append(gc.get_threshold())
        return None  # as for a site file with errors: cmd_run stops there

    before = gc.get_threshold()
    monkeypatch.setattr(edge.cli, "load_for_daemon", load)
    try:
        args = edge.cli.build_parser().parse_args(["run", "-c", "site.yaml"])
        assert edge.cli.cmd_run(args) == edge.daemon_config.EXIT_CONFIG
    finally:
        gc.set_threshold(*before)
    assert seen == [(COLLECTOR_THRESHOLD, before[1], before[2])]


def test_cyclic_garbage_is_still_collected_by_itself_within_the_threshold() -> None:
    from edge.heap import COLLECTOR_THRESHOLD

    root = str(Path(__file__).resolve().parents[2])
    done = subprocess.run([sys.executable, "-c", COLLECTED_UNDER_LOAD.format(root=root)],
                          capture_output=True, text=True, timeout=60, check=True)
    freed, waiting = map(int, done.stdout.split())
    # Each Cycle is more than one container object (its instance dict, the finalizer's):
    # at no time do more than the threshold's worth wait for a collection.
    assert freed >= 4 * COLLECTOR_THRESHOLD
    assert waiting <= COLLECTOR_THRESHOLD
