"""Bytes written to disk per stored reading (SD cards wear out).

The headline figure (``--daemon``) runs the real gateway at 1,000 points/s (10 simulated
Modbus TCP devices of 100 float32 points, polled every second, a threshold rule per
device, a private Mosquitto and a subscriber) and divides the growth of the gateway
process's ``write_bytes`` in /proc/PID/io over a window by the readings it stored in it.

The breakdown below it commits poll cycles through the real Store (readings and their
telemetry message, as the daemon does), acknowledges them as the uplink would, and reads the
kernel's count of bytes this process caused to be written to storage
(/proc/self/io write_bytes: WAL appends, checkpoints into the main file, fsyncs'
metadata) including a final checkpoint. Varies the number of readings per transaction
(one device poll of 1, 10 or 50 points) and the synchronous setting.

Usage: python bench/disk_bytes.py [--cycles 2000] [--daemon --seconds 120]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from _common import (
    Subscriber,
    bench_site_config,
    machine,
    plan_buses,
    start_broker,
    start_edge,
    start_simulators,
    tear_down,
)

from edge.store import Store
from vocab.model import Reading


def write_bytes() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise RuntimeError("no write_bytes in /proc/self/io")


def proc_write_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise RuntimeError(f"no write_bytes in /proc/{pid}/io")


def run_daemon(seconds: float, synchronous: str, points: int = 1000, per_device: int = 100,
               devices_per_bus: int = 10) -> tuple[float, float]:
    """(bytes per stored reading, readings/s) of a real gateway over ``seconds``."""
    with tempfile.TemporaryDirectory(prefix="bench-disk-", dir=os.environ.get("BENCH_DIR")) as tmp:
        work = Path(tmp)
        broker = start_broker(work)
        buses = plan_buses(points, per_device, devices_per_bus)
        rules = [{"id": f"level-high-{d:03d}", "type": "threshold", "point": f"dev-{d:03d}/p0",
                  "high": [{"severity": "warning", "value": "flood_limit"}],
                  "hysteresis": 0.05} for d in range(sum(len(b.devices) for b in buses))]
        config = bench_site_config(work, broker.port, buses, rules=rules, gateway_id="gw",
                                   health_s=30.0)
        text = config.read_text().replace("store:\n", f"store:\n  synchronous: {synchronous}\n")
        config.write_text(text)
        sims, gateway, sub = [], None, None
        try:
            sims = start_simulators(work, buses, 1)
            sub = Subscriber(broker.port, "reservoir/bench/gw/#")
            gateway = start_edge(["run", "-c", str(config), "--log-level", "warning"],
                                 work / "gw.log")
            if not sub.wait_for(lambda s: s.readings > 0, 60):
                raise RuntimeError(f"no reading within 60 s; see {work / 'gw.log'}")
            time.sleep(10)  # past start-up and the first checkpoint
            pid = gateway.proc.pid
            before, r0, t0 = proc_write_bytes(pid), sub.readings, time.monotonic()
            time.sleep(seconds)
            written, r1, t1 = proc_write_bytes(pid) - before, sub.readings, time.monotonic()
        finally:
            tear_down(gateway, sims, sub, broker)
    return written / max(1, r1 - r0), (r1 - r0) / (t1 - t0)


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
            store.outbox.ack(seqs)
        store.close()  # includes the final WAL checkpoint
        elapsed = time.perf_counter() - t0
        written = write_bytes() - before
    readings = points * cycles
    return written / readings, readings / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cycles", type=int, default=2000)
    parser.add_argument("--daemon", action="store_true",
                        help="also measure the running gateway at 1,000 points/s")
    parser.add_argument("--seconds", type=float, default=120, help="daemon window")
    parser.add_argument("--points", type=int, default=1000, help="daemon: points polled at 1 s")
    parser.add_argument("--per-device", type=int, default=100,
                        help="daemon: points per device (1-2 = every piezometer its own slave)")
    parser.add_argument("--devices-per-bus", type=int, default=10,
                        help="daemon: devices per Modbus TCP endpoint")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    if args.daemon:
        print(f"gateway at {args.points} points/s (devices of {args.per_device} points, "
              f"{args.devices_per_bus} per endpoint, 1 s polling):")
        print(f"{'synchronous':>11} {'bytes/reading':>14} {'readings/s':>11}")
        for synchronous in ("full", "normal"):
            per_reading, rate = run_daemon(args.seconds, synchronous, args.points,
                                           args.per_device, args.devices_per_bus)
            print(f"{synchronous:>11} {per_reading:>14.0f} {rate:>11.0f}")
        print("store alone (commit_cycle + ack, no rules or uplink):")
    print(f"{'readings/txn':>12} {'synchronous':>11} {'bytes/reading':>14} {'readings/s':>11}")
    for synchronous in ("full", "normal"):
        for points in (1, 10, 50):
            per_reading, rate = run(points, args.cycles, synchronous)
            print(f"{points:>12} {synchronous:>11} {per_reading:>14.0f} {rate:>11.0f}")


if __name__ == "__main__":
    main()
