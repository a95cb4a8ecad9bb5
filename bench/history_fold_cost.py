"""Disk bytes per datapoint of the history fold and of releasing folded messages.

A commit stores a window's polls as one telemetry message and no per-device index entry;
maintenance later folds the messages into per-device history chunks (edge/historyfold.py)
and, past the resend horizon, deletes the message rows. This bench prices those two
steps per datapoint, for several fold intervals (``store.history_fold_s``), so that the
commit-path figure of bench/store_bytes_per_datapoint.py plus these gives the whole.

For each interval: a fresh store on a real disk (``BENCH_DIR``) is given ``--prior``
folds of history first (so the history index already spans many leaves per device, as
on a gateway that has run for a while), then one interval's worth of windows (200
devices × ``--registers`` at ``--poll-s``, one message per ``--window-ms``), committed
with ``synchronous: normal`` and not measured. After ``os.sync()`` (write_bytes counts a
page when it is dirtied, so dirty pages left over would hide later writes) the fold and a
checkpoint are measured from /proc/self/io write_bytes, then the release of those
messages (all acknowledged) and a checkpoint.

Usage: BENCH_DIR=/work python bench/history_fold_cost.py [--intervals 60,300,600,1800]
       [--registers 1] [--poll-s 1] [--prior 12] [--repeat 3]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import structlog  # noqa: E402

from edge.store import Store  # noqa: E402
from vocab.model import Reading  # noqa: E402


def write_bytes() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise RuntimeError("no write_bytes in /proc/self/io")


def commit_interval(store: Store, args: argparse.Namespace, start_ms: int,
                    seconds: float) -> int:
    """Commit ``seconds`` of the site's polls, one message per window; returns readings."""
    window = args.window_ms
    devices_per_window = args.devices * window / (args.poll_s * 1000)
    done, t, owed = 0, 0.0, 0.0
    device = 0
    while t < seconds * 1000:
        owed += devices_per_window
        cycles = []
        while owed >= 1:
            ts = start_ms + int(t)
            cycles.append(([Reading(f"piezo-{device}", f"p{r}", ts, 100.0 + r + (t % 5000) / 1e4,
                                    "m", "good", 10_000.0 + r) for r in range(args.registers)],
                           []))
            device = (device + 1) % args.devices
            owed -= 1
        if cycles:
            store.outbox.ack(store.commit_cycles(cycles)[0])
            done += len(cycles) * args.registers
        t += window
    store.outbox.flush_acks()
    return done


def one(args: argparse.Namespace, interval: float, db: Path) -> tuple[float, float]:
    store = Store(db, "normal", resend_horizon_s=0)
    start = int(time.time() * 1000) - int((args.prior + 2) * interval * 1000)
    for fold in range(args.prior):
        commit_interval(store, args, start + int(fold * interval * 1000), interval)
        store.fold()
        store.quota.release_messages(2**62)
    readings = commit_interval(store, args, start + int(args.prior * interval * 1000),
                               interval)
    conn = store.connection
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    os.sync()
    before = write_bytes()
    store.fold()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    os.sync()
    folded = write_bytes() - before
    before = write_bytes()
    store.quota.release_messages(2**62)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    os.sync()
    released = write_bytes() - before
    store.close()
    return folded / readings, released / readings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--intervals", default="60,300,600,1800")
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--registers", type=int, default=1)
    parser.add_argument("--poll-s", type=float, default=1.0)
    parser.add_argument("--window-ms", type=float, default=250.0)
    parser.add_argument("--prior", type=int, default=12, help="folds of history before")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    print(f"{args.devices} devices x {args.registers} every {args.poll_s:g} s, one message "
          f"per {args.window_ms:g} ms, {args.prior} folds of history before; median of "
          f"{args.repeat}")
    print(f"{'fold every s':>12} {'fold B/datapoint':>17} {'release B/datapoint':>20}")
    for interval in (float(x) for x in args.intervals.split(",")):
        runs = []
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory(prefix="bench-fold-",
                                             dir=os.environ.get("BENCH_DIR")) as tmp:
                runs.append(one(args, interval, Path(tmp) / "edge.db"))
        fold = statistics.median(r[0] for r in runs)
        release = statistics.median(r[1] for r in runs)
        print(f"{interval:>12g} {fold:>17.1f} {release:>20.1f}", flush=True)


if __name__ == "__main__":
    main()
