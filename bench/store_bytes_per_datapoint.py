"""Disk bytes written per datapoint when many small devices feed the store.

Drives the real pipeline (rules engine, group commit) and store the way a reservoir's
200 small slaves do, in one of two phases (``--phases``):

* ``scattered``: 200 device tasks, each polling every ``--interval`` seconds at its own
  phase (the phase-free schedule before issue 19) and handing the pipeline a poll of
  ``--registers`` readings;
* ``boundary``: the bus task's schedule since issue 19 (drivers/bustask.py): at every
  boundary of the interval the bus polls its devices one after another, ``--poll-ms``
  each, and every result but the round's last says ``mid_round``, so the pipeline's
  window waits for the round (``round_wait_ms`` as edge/commitwindow.py sets it).

An uplink task
acknowledges what was queued every 100 ms, as the MQTT uplink does on PUBACK (the
deletes ride on the next commit). Each case runs in a fresh process on a fresh store in
``BENCH_DIR`` (a real disk: tmpfs writes count nothing), and the figure is the growth of
that process's ``write_bytes`` in /proc/self/io over the run, including the final
checkpoint, divided by the datapoints stored.

Usage: BENCH_DIR=/work python bench/store_bytes_per_datapoint.py [--seconds 20]
       [--windows 0,25,50,100,200] [--synchronous full,normal] [--repeat 3]
       [--phases scattered,boundary] [--poll-ms 1]
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

from drivers.bustask import boundary_after  # noqa: E402
from edge.commitwindow import round_wait_ms  # noqa: E402
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


def site(devices: int, registers: int, interval: float, db: Path,
         window_ms: float) -> GatewaySettings:
    return GatewaySettings.model_validate({
        "site": {"id": "bench", "timezone": "Asia/Shanghai",
                 "levels": {"dead": 110.0, "flood_limit": 123.5, "design_flood": 124.8,
                            "crest": 126.0}},
        "gateway": {"id": "gw"}, "mqtt": {"host": "127.0.0.1"},
        "store": {"path": str(db), "commit_window_ms": window_ms},
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

    settings = site(args.devices, args.registers, args.interval, db, args.window)
    # Scattered polls never say mid_round: the round wait would change nothing.
    pipeline = Pipeline(worker, Outbox(worker), make_room, args.window,
                        round_wait_ms(settings) if args.phase == "boundary" else 0.0)
    await pipeline.rebuild_engine(lambda active: RuleEngine(settings.rule_site(), active))
    runner = asyncio.create_task(pipeline.run())
    stop = asyncio.Event()
    polled = [0]

    async def hand_over(d: int, i: int, mid_round: bool = False) -> None:
        ts = int(time.time() * 1000)
        await pipeline.enqueue(PollResult("lan", f"piezo-{d}", tuple(
            Reading(f"piezo-{d}", f"p{r}", ts, 100.0 + r + (i % 50) * 0.01, "m", "good",
                    10_000.0 + r) for r in range(args.registers)), 1, True,
            mid_round=mid_round))
        polled[0] += args.registers

    async def device(d: int) -> None:
        await asyncio.sleep(random.random() * args.interval)  # each slave at its own phase
        i = 0
        while not stop.is_set():
            await hand_over(d, i)
            i += 1
            await asyncio.sleep(args.interval)

    async def bus() -> None:
        """One round per boundary: every device, one after another, as the bus task."""
        loop = asyncio.get_running_loop()
        offset, i = loop.time(), 0
        while not stop.is_set():
            for d in range(args.devices):
                await asyncio.sleep(args.poll_ms / 1000)  # the poll on the wire
                await hand_over(d, i, mid_round=d < args.devices - 1)
            i += 1
            now = loop.time()
            await asyncio.sleep(boundary_after(now, args.interval, offset) - now)

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
    if args.phase == "boundary":
        tasks = [asyncio.create_task(bus())]
    else:
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
    parser.add_argument("--phases", default="scattered,boundary",
                        help="scattered (each device its own phase), boundary (one round "
                             "per interval boundary, as drivers/bustask.py polls)")
    parser.add_argument("--poll-ms", type=float, default=1.0,
                        help="one device's poll on the bus, in a boundary round")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--phase", default="scattered", help=argparse.SUPPRESS)
    parser.add_argument("--registers", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--interval", type=float, default=1.0, help=argparse.SUPPRESS)
    parser.add_argument("--window", type=float, default=100, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one_case(args)
        return
    print(f"{args.devices} devices, {args.seconds:.0f} s per run, median of {args.repeat}")
    print(f"{'shape':>10} {'sync':>6} {'window ms':>9} {'phase':>9} {'B/datapoint':>11} "
          f"{'commits/s':>9} {'datapoints/s':>12}")
    for shape in args.shapes.split(","):
        registers, interval = shape.split("x")
        for synchronous in args.synchronous.split(","):
            for window in args.windows.split(","):
                for phase in args.phases.split(","):
                    med = one_median(args, registers, interval, window, synchronous, phase)
                    print(f"{registers + ' x ' + interval + 's':>10} {synchronous:>6} "
                          f"{window:>9} {phase:>9} {med['bytes_per_datapoint']:>11.0f} "
                          f"{med['commits_per_s']:>9.1f} {med['datapoints_per_s']:>12.0f}",
                          flush=True)


def one_median(args: argparse.Namespace, registers: str, interval: str, window: str,
               synchronous: str, phase: str) -> dict[str, float]:
    """The median of ``--repeat`` runs of one case, each in a fresh process."""
    runs = [json.loads(subprocess.run(
        [sys.executable, __file__, "--one", "--seconds", str(args.seconds),
         "--devices", str(args.devices), "--registers", registers, "--interval", interval,
         "--window", window, "--synchronous", synchronous, "--phase", phase,
         "--poll-ms", str(args.poll_ms)],
        check=True, capture_output=True, text=True).stdout.splitlines()[-1])
        for _ in range(args.repeat)]
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


if __name__ == "__main__":
    main()
