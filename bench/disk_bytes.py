"""Bytes written to disk per stored reading (SD cards wear out).

Commits poll cycles through the real Store (readings + the telemetry message in the
outbox, as the daemon does), acknowledges them as the uplink would, and reads the
kernel's count of bytes this process caused to be written to storage
(/proc/self/io write_bytes: WAL appends, checkpoints into the main file, fsyncs'
metadata) including a final checkpoint. Varies the number of readings per transaction
(one device poll of 1, 10 or 50 points) and the synchronous setting.

Usage: python bench/disk_bytes.py [--cycles 2000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from _common import machine

from edge.model import Reading
from edge.store import Store


def write_bytes() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise RuntimeError("no write_bytes in /proc/self/io")


def run(points: int, cycles: int, synchronous: str) -> tuple[float, float]:
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        store = Store(Path(tmp) / "edge.db", synchronous)  # type: ignore[arg-type]
        os.sync()
        before = write_bytes()
        t0 = time.perf_counter()
        ts = int(time.time() * 1000)
        for i in range(cycles):
            batch = [Reading("logger-1", f"p{j}", ts + i * 1000, 100.0 + j * 0.01 + i * 1e-4,
                             "m", "good", 10000.0 + j) for j in range(points)]
            seqs = store.commit_cycle(batch, [])
            store.ack_outbox(seqs)
        store.close()  # includes the final WAL checkpoint
        elapsed = time.perf_counter() - t0
        written = write_bytes() - before
    readings = points * cycles
    return written / readings, readings / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cycles", type=int, default=2000)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"{'readings/txn':>12} {'synchronous':>11} {'bytes/reading':>14} {'readings/s':>11}")
    for synchronous in ("full", "normal"):
        for points in (1, 10, 50):
            per_reading, rate = run(points, args.cycles, synchronous)
            print(f"{points:>12} {synchronous:>11} {per_reading:>14.0f} {rate:>11.0f}")


if __name__ == "__main__":
    main()
