"""The field side's cost per Modbus TCP poll with the reservoir's shape, in process.

The part of issue #19's per-poll cost that belongs to drivers/: 200 devices × 10 float32
points (bench/_shape.py's ``200x10`` case), each device its own ``edge simulate``
endpoint in separate processes, polled by the real ``BusTask`` and ``ModbusDriver`` (one
link, one pymodbus client per endpoint), each poll handed to a sink that only counts.
No store, rules or uplink: what remains is the request, its answer, the decoding and
the poll tail. By default every bus polls back to back (``poll_interval_s`` tiny) for
``--rounds`` polls: the per-poll work alone; ``--interval 0.1`` adds each bus task's wait
between polls, as the daemon does it.

Reports ``time.process_time`` per datapoint and per poll over the polling only (the
median over --repeats). For instruction counts, which a loaded machine does not skew,
run it twice under callgrind with different --rounds and divide the difference:

    valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%p python \
        bench/driver_poll_cost.py --rounds 5 --repeats 1
    (same with --rounds 25; Ir per datapoint = (Ir25 - Ir5) / (20 × 200 × 10))

``--profile`` prints the top of a cProfile of the polling instead.

Usage: python bench/driver_poll_cost.py [--rounds 50] [--repeats 3] [--case 200x10]
       [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import machine, median, start_simulators, stop_all
from _shape import CASES, site_files, tcp_buses

from drivers.bus import BusHealth, DeviceHealth
from drivers.bustask import BusTask
from drivers.modbus import ModbusDriver
from edge.config import load_config
from vocab.model import PollResult


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50, help="polls per device")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--case", default="200x10", help="a TCP case of bench/_shape.py")
    parser.add_argument("--interval", type=float, default=1e-6,
                        help="poll interval, s: tiny polls back to back (the per-poll work "
                             "alone); 0.1 adds the bus tasks' waits between polls")
    parser.add_argument("--profile", action="store_true", help="cProfile the polling")
    return parser.parse_args()


async def poll_rounds(config: Any, rounds: int, interval: float,
                      profile: cProfile.Profile | None) -> tuple[
        float, int, int]:
    """(CPU seconds, polls, datapoints) of ``rounds`` polls of every bench device."""
    by_bus: dict[str, list[Any]] = {}
    for device in config.devices:
        if device.id.startswith("dev-"):
            by_bus.setdefault(device.bus, []).append(
                device.model_copy(update={"poll_interval_s": interval}))
    polls = datapoints = bad = 0
    done = asyncio.Event()
    tasks: list[BusTask] = []

    async def sink(result: PollResult) -> None:
        nonlocal polls, datapoints, bad
        polls += 1
        datapoints += len(result.readings)
        bad += sum(r.quality != "good" for r in result.readings)
        if polls == rounds * len(by_bus):
            done.set()

    for bus_id, devices in by_bus.items():
        health = BusHealth(devices={d.id: DeviceHealth() for d in devices})
        driver = ModbusDriver(config.bus(bus_id), devices, health)
        await driver.reopen()  # connections are opened before the measured polling
        task = BusTask(bus_id, devices, driver, health, sink)
        original = task.sink

        async def counted(result: PollResult, task: BusTask = task,
                          original: Any = original) -> None:
            await original(result)
            if task.health.cycles + 1 >= rounds:
                task.stop()

        task.sink = counted
        tasks.append(task)
    started = time.process_time()
    if profile is not None:
        profile.enable()
    runners = [asyncio.create_task(t.run()) for t in tasks]
    await asyncio.wait_for(done.wait(), 600)
    await asyncio.gather(*runners)
    if profile is not None:
        profile.disable()
    cpu = time.process_time() - started
    if bad:
        raise SystemExit(f"{bad} readings came back bad: the simulators are not serving")
    return cpu, polls, datapoints


def main() -> None:
    args = parse()
    case = next((c for c in CASES if c.key == args.case and not c.rtu), None)
    if case is None:
        raise SystemExit(f"--case: not a TCP case of bench/_shape.py: {args.case}")
    rng = random.Random(1)
    with tempfile.TemporaryDirectory(prefix="poll-cost-") as tmp:
        work = Path(tmp)
        tcp = tcp_buses(case, rng)
        site, _sim = site_files(case, work, 1, 1, tcp)
        config = load_config(site).settings
        sims = start_simulators(work, tcp, 2)
        try:
            per_datapoint, per_poll = [], []
            for _ in range(args.repeats):
                profile = cProfile.Profile() if args.profile else None
                cpu, polls, datapoints = asyncio.run(poll_rounds(config, args.rounds, args.interval,
                                                           profile))
                per_datapoint.append(cpu / datapoints * 1e6)
                per_poll.append(cpu / polls * 1e6)
                if profile is not None:
                    pstats.Stats(profile).sort_stats("tottime").print_stats(35)
        finally:
            stop_all(sims)
    print(f"{machine()}; {case.label}, {args.rounds} polls a device every "
          f"{args.interval:g} s, {args.repeats} repeats")
    print(f"CPU µs per datapoint: median {median(per_datapoint):.2f} "
          f"({', '.join(f'{v:.2f}' for v in per_datapoint)}); "
          f"per poll {median(per_poll):.1f}")


if __name__ == "__main__":
    main()
