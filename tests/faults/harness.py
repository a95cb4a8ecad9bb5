"""Shared parts of the fault suite: the simulated site, the gateway's store seen only
through its public tools (``edge export``, ``edge status``, ``status.json``), and what the
platform's subscriber received.

The store's tables are never queried here: the schema is allowed to change under these
tests, the command-line tools and the MQTT contract are not.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from tests.support import EdgeProcess, Recorder, run_edge, start_edge, wait_for_port

ROOT = "reservoir/test-site/gw-test"  # the topic root of tests.support.site_config
FAR_FUTURE_MS = 4_102_444_800_000  # 2100-01-01: "everything" for edge export --to
STATUS_FILE = "status.json"

# A reading is identified by where and when it was acquired.
Key = tuple[str, str, int]


def wait_until(predicate: Callable[[], bool], timeout: float, what: str,
               interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def wait_for_log(process: EdgeProcess, text: str, timeout: float) -> None:
    """Until ``text`` appears in the process's log; fails early if the process died."""
    def seen() -> bool:
        if process.proc.poll() is not None:
            raise AssertionError(f"process exited ({process.proc.returncode}) before "
                                 f"logging {text!r}:\n{process.output()[-3000:]}")
        return text in process.output()

    wait_until(seen, timeout, f"{text!r} in {process.log.name}", interval=0.05)


def start_simulator(config: Path, log: Path, *, values: Path | None = None,
                    faults: Path | None = None, ports: Iterable[int] = (),
                    links: Iterable[Path] = (), timeout: float = 20) -> EdgeProcess:
    """``edge simulate`` serving the site's devices, returned once every TCP port listens
    and every serial link exists."""
    args = ["simulate", "-c", str(config)]
    if values is not None:
        args += ["--values", str(values)]
    if faults is not None:
        args += ["--faults", str(faults)]
    sim = start_edge(args, log)
    try:
        for port in ports:
            wait_for_port(port, timeout)
        for link in links:
            wait_until(lambda link=link: link.exists(), timeout, f"serial link {link}")
    except BaseException:
        sim.kill()
        raise
    return sim


def integrity_check(db: Path) -> str:
    """SQLite's own verdict on the file, as an operator would ask for it after a crash."""
    conn = sqlite3.connect(db, timeout=10)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def export_readings(config: Path) -> list[dict[str, Any]]:
    """Every reading the store holds, through ``edge export --format jsonl``."""
    done = run_edge(["export", "-c", str(config), "--from", "0", "--to", str(FAR_FUTURE_MS),
                     "--format", "jsonl"])
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def stored_keys(config: Path) -> set[Key]:
    return {(r["device"], r["point"], int(r["ts"])) for r in export_readings(config)}


def outbox_waiting(config: Path) -> int:
    """Messages still waiting for a PUBACK, as ``edge status`` reports them."""
    done = run_edge(["status", "-c", str(config)])
    assert done.returncode == 0, done.stderr
    found = re.search(r"^outbox: (\d+) message", done.stdout, re.MULTILINE)
    assert found, f"edge status did not report the outbox:\n{done.stdout}"
    return int(found.group(1))


def status_file(store_dir: Path) -> dict[str, Any]:
    """The health snapshot the gateway writes beside its store (docs/mqtt.md, health)."""
    data: dict[str, Any] = json.loads((store_dir / STATUS_FILE).read_text(encoding="utf-8"))
    return data


def received_seqs(rec: Recorder) -> set[int]:
    return {int(m["seq"]) for m in rec.on("/telemetry") + rec.on("/alarms")}


def received_keys(rec: Recorder) -> set[Key]:
    return {(r["device"], r["point"], int(r["ts"]))
            for m in rec.on("/telemetry") for r in m["readings"]}


def missing_seqs(seqs: set[int], last: int) -> list[int]:
    return sorted(set(range(1, last + 1)) - seqs)


def assert_everything_stored_was_delivered(config: Path, store_dir: Path,
                                           rec: Recorder) -> tuple[int, int]:
    """After a clean stop: nothing waits in the outbox, every stored reading reached the
    platform and the seqs it received have no gap. Returns (last seq, stored readings)."""
    assert outbox_waiting(config) == 0, "a clean stop with the broker up drains the outbox"
    stored = stored_keys(config)
    got = received_keys(rec)
    undelivered = stored - got
    assert not undelivered, (f"{len(undelivered)} of {len(stored)} stored readings never "
                             f"reached the subscriber, e.g. {sorted(undelivered)[:5]}")
    status = status_file(store_dir)
    assert status.get("stopped"), "the last status.json is the one written at the stop"
    last_seq = int(status["outbox"]["last_seq"])
    seqs = received_seqs(rec)
    assert not missing_seqs(seqs, last_seq), f"seq gaps: {missing_seqs(seqs, last_seq)[:20]}"
    assert max(seqs) == last_seq, f"received seq {max(seqs)} beyond the store's {last_seq}"
    return last_seq, len(stored)


def watch(stack: ExitStack, process: EdgeProcess) -> EdgeProcess:
    """``process`` is SIGKILLed when the test's stack unwinds (a no-op once it stopped)."""
    stack.callback(process.kill)
    return process


def subscribe(stack: ExitStack, port: int, topic: str = f"{ROOT}/#",
              persistent: bool = False) -> Recorder:
    """The platform's subscriber. Persistent: on a persistent broker, what was queued for
    the platform while the broker was down or the subscriber reconnecting still arrives."""
    rec = Recorder(port, topic, persistent=persistent)
    stack.callback(rec.close)
    return rec
