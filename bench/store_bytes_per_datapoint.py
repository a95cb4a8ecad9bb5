"""Disk bytes written per datapoint when many small devices feed the store.

Drives the real pipeline (rules engine, group commit) and store the way a reservoir's
200 small slaves do: 200 device tasks, each polling every ``--interval`` seconds at its
own phase and handing the pipeline a poll of ``--registers`` readings; an uplink task
acknowledges what was queued every 100 ms, as the MQTT uplink does on PUBACK (the
deletes ride on the next commit). Each case runs in a fresh process on a fresh store in
``BENCH_DIR`` (a real disk: tmpfs writes count nothing), and the figure is the growth of
that process's ``write_bytes`` in /proc/self/io over the run, including the final
checkpoint, divided by the datapoints stored.

Usage: BENCH_DIR=/work python bench/store_bytes_per_datapoint.py [--seconds 20]
       [--windows 0,25,50,100,200] [--synchronous full,normal] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from edge.config import GatewaySettings  # noqa: E402
from edge.outbox import Outbox  # noqa: E402
from edge.pipeline import Pipeline  # noqa: E402
from edge.store import Store, StoreWorker  # noqa: E402
from rules.engine import RuleEngine  # noqa: E402
from vocab.model import PollResult, Reading  # noqa: E402


def write_bytes() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise RuntimeError("no write_bytes in /proc/self/io")


def site(devices: int, registers: int, interval: float, db: Path) -> GatewaySettings:
    return GatewaySettings.model_validate({
        "site": {"id": "bench", "timezone": "Asia/Shanghai",
                 "levels": {"dead": 110.0, "flood_limit": 123.5, "design_flood": 124.8,
                            "crest": 126.0}},
        "gateway": {"id": "gw"}, "mqtt": {"host": "127.0.0.1"}, "store": {"path": str(db)},
        "buses": [{"id": "lan", "type": "modbus_tcp", "host": "127.0.0.1"}],
        "devices": [{"id": f"piezo-{d}", "bus": "lan", "poll_interval_s": interval,
                     "points": [{"id": f"p{r}", "quantity": "piezometric_level", "unit": "m",
                                 "register": {"table": "holding", "address": r}}
                                for r in range(registers)]} for d in range(devices)],
        "rules": [], "derived": [],
    })


async def drive(args: argparse.Namespace, db: Path) -> dict[str, float]:
    worker = StoreWorker(Store(db, args.synchronous))

    async def make_room(quota_bytes: int) -> None:
        await worker.maintain(quota_bytes, 0)

    pipeline = Pipeline(worker, Outbox(worker), make_room, args.window)
    settings = site(args.devices, args.registers, args.interval, db)
    await pipeline.rebuild_engine(lambda active: RuleEngine(settings.rule_site(), active))
    runner = asyncio.create_task(pipeline.run())
    stop = asyncio.Event()
    polled = [0]

    async def device(d: int) -> None:
        await asyncio.sleep(random.random() * args.interval)  # each slave at its own phase
        i = 0
        while not stop.is_set():
            ts = int(time.time() * 1000)
            await pipeline.enqueue(PollResult("lan", f"piezo-{d}", tuple(
                Reading(f"piezo-{d}", f"p{r}", ts, 100.0 + r + (i % 50) * 0.01, "m", "good",
                        10_000.0 + r) for r in range(args.registers)), 1, True))
            polled[0] += args.registers
            i += 1
            await asyncio.sleep(args.interval)

    def ack_queued(after: int) -> int:
        entries = worker.rows.pending("telemetry", after, 5000)
        worker.rows.ack(e.seq for e in entries)
        return entries[-1].seq if entries else after

    async def uplink() -> None:
        last = 0
        while not stop.is_set():
            last = await worker.run(ack_queued, last)
            await asyncio.sleep(0.1)

    os.sync()
    before, t0 = write_bytes(), time.monotonic()
    tasks = [asyncio.create_task(device(d)) for d in range(args.devices)]
    acker = asyncio.create_task(uplink())
    await asyncio.sleep(args.seconds)
    stop.set()
    await asyncio.gather(*tasks, acker)
    await pipeline.stop()
    await runner
    commits = pipeline.commits
    worker.close()  # the final checkpoint counts
    elapsed = time.monotonic() - t0
    written = write_bytes() - before
    return {"bytes_per_datapoint": written / max(1, polled[0]), "datapoints": polled[0],
            "commits_per_s": commits / elapsed, "datapoints_per_s": polled[0] / elapsed}


def one_case(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-bpd-",
                                     dir=os.environ.get("BENCH_DIR")) as tmp:
        print(json.dumps(asyncio.run(drive(args, Path(tmp) / "edge.db"))))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--shapes", default="1x1,10x1,1x0.25,10x0.25",
                        help="registers x poll interval (s), comma separated")
    parser.add_argument("--windows", default="0,25,50,100,200",
                        help="store.commit_window_ms values, comma separated")
    parser.add_argument("--synchronous", default="full,normal")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--registers", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--interval", type=float, default=1.0, help=argparse.SUPPRESS)
    parser.add_argument("--window", type=float, default=100, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one_case(args)
        return
    print(f"{args.devices} devices, {args.seconds:.0f} s per run, median of {args.repeat}")
    print(f"{'shape':>10} {'sync':>6} {'window ms':>9} {'B/datapoint':>11} "
          f"{'commits/s':>9} {'datapoints/s':>12}")
    for shape in args.shapes.split(","):
        registers, interval = shape.split("x")
        for synchronous in args.synchronous.split(","):
            for window in args.windows.split(","):
                runs = [json.loads(subprocess.run(
                    [sys.executable, __file__, "--one", "--seconds", str(args.seconds),
                     "--devices", str(args.devices), "--registers", registers,
                     "--interval", interval, "--window", window,
                     "--synchronous", synchronous],
                    check=True, capture_output=True, text=True).stdout.splitlines()[-1])
                    for _ in range(args.repeat)]
                med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                print(f"{registers + ' x ' + interval + 's':>10} {synchronous:>6} {window:>9} "
                      f"{med['bytes_per_datapoint']:>11.0f} {med['commits_per_s']:>9.1f} "
                      f"{med['datapoints_per_s']:>12.0f}", flush=True)


if __name__ == "__main__":
    main()
