"""Gateway memory over time at 1,000 readings/s: is there growth?

Runs ``edge simulate`` (10 Modbus TCP devices x 100 float32 points, one endpoint), the
gateway polling every device every second (1,000 readings/s, one threshold rule per
device), a private Mosquitto and a subscriber, all on 127.0.0.1. From the first reading
at the subscriber on, every --every seconds for --minutes it samples the gateway's RSS
(VmRSS from /proc/PID/status) and PSS and USS (from /proc/PID/smaps_rollup, when the
kernel has it; USS = private clean + private dirty), the readings delivered so far and the
store's size on disk (database + WAL).

Prints every sample, then the start, the end, the maximum and the slope in MiB/hour
(least-squares over the second half of the run, after the caches have filled), so a
steady growth shows as a positive slope.

Usage: python bench/memory.py [--minutes 30] [--every 10] [--points 1000]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from _common import (
    Subscriber,
    bench_site_config,
    least_squares_slope,
    machine,
    plan_buses,
    proc_cpu_seconds,
    proc_memory_mib,
    start_broker,
    start_edge,
    start_simulators,
    tear_down,
)

if TYPE_CHECKING:
    from tests.support import EdgeProcess

GATEWAY_ID = "gw"


@dataclass
class Sample:
    t_s: float  # since the first reading at the subscriber
    rss: float
    pss: float
    uss: float
    readings: int  # delivered to the subscriber so far
    store_mib: float


def store_mib(db: Path) -> float:
    total = 0
    for suffix in ("", "-wal", "-shm"):
        path = db.with_name(db.name + suffix)
        if path.exists():
            total += path.stat().st_size
    return total / 2**20


def threshold_rules(devices: int) -> list[dict[str, Any]]:
    return [{"id": f"level-high-{d:03d}", "type": "threshold", "point": f"dev-{d:03d}/p0",
             "high": [{"severity": "warning", "value": "flood_limit"}],
             "hysteresis": 0.05} for d in range(devices)]


def fmt(value: float) -> str:
    return "   -" if math.isnan(value) else f"{value:7.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--every", type=float, default=10, help="seconds between samples")
    parser.add_argument("--points", type=int, default=1000, help="points polled every 1 s")
    args = parser.parse_args()
    samples: list[Sample] = []
    with tempfile.TemporaryDirectory(prefix="bench-memory-",
                                     dir=os.environ.get("BENCH_DIR")) as tmp:
        work = Path(tmp)
        broker = start_broker(work)
        buses = plan_buses(args.points)
        devices = sum(len(b.devices) for b in buses)
        db = work / "site.db"
        config = bench_site_config(work, broker.port, buses, rules=threshold_rules(devices),
                                   gateway_id=GATEWAY_ID, store=db)
        sims: list[EdgeProcess] = []
        sub: Subscriber | None = None
        gateway: EdgeProcess | None = None
        try:
            sims = start_simulators(work, buses, 1)
            sub = Subscriber(broker.port, f"reservoir/bench/{GATEWAY_ID}/#")
            gateway = start_edge(["run", "-c", str(config), "--log-level", "warning"],
                                 work / "gw.log")
            pid = gateway.proc.pid
            if not sub.wait_for(lambda s: s.readings > 0, 60):
                raise RuntimeError("no reading within 60 s:\n" + gateway.output()[-2000:])
            start = time.monotonic()
            end = start + args.minutes * 60
            next_at = start
            cpu0 = proc_cpu_seconds(pid)
            while True:
                if gateway.proc.poll() is not None:
                    raise RuntimeError(f"gateway exited ({gateway.proc.returncode}):\n"
                                       + gateway.output()[-2000:])
                mem = proc_memory_mib(pid)
                sample = Sample(time.monotonic() - start, mem["rss"], mem["pss"], mem["uss"],
                                sub.readings, store_mib(db))
                samples.append(sample)
                print(f"{sample.t_s:7.0f} s  RSS {fmt(sample.rss)}  PSS {fmt(sample.pss)}  "
                      f"USS {fmt(sample.uss)} MiB  readings {sample.readings:>9}  "
                      f"store {sample.store_mib:6.1f} MiB", file=sys.stderr, flush=True)
                next_at += args.every
                if next_at > end + 1e-6:
                    break
                time.sleep(max(0.0, next_at - time.monotonic()))
            cpu_pct = (proc_cpu_seconds(pid) - cpu0) / (time.monotonic() - start) * 100
        finally:
            tear_down(gateway, sims, sub, broker)
    span = samples[-1].t_s - samples[0].t_s
    rate = (samples[-1].readings - samples[0].readings) / span if span else float("nan")
    print(f"machine: {machine()}")
    print(f"site: {args.points} points ({devices} Modbus TCP devices) polled every 1 s, "
          f"{devices} threshold rules; {len(samples)} samples every {args.every:g} s over "
          f"{span / 60:.1f} min; delivered {rate:.0f} readings/s; gateway CPU "
          f"{cpu_pct:.1f} % of one core")
    print(f"{'t (s)':>8}{'RSS':>9}{'PSS':>9}{'USS':>9}   (MiB){'readings':>12}{'store MiB':>11}")
    for s in samples:
        print(f"{s.t_s:>8.0f}{fmt(s.rss):>9}{fmt(s.pss):>9}{fmt(s.uss):>9}        "
              f"{s.readings:>12}{s.store_mib:>11.1f}")
    half = [s for s in samples if s.t_s >= samples[-1].t_s / 2]
    for name in ("rss", "pss", "uss"):
        values = [getattr(s, name) for s in samples]
        if all(math.isnan(v) for v in values):
            print(f"{name.upper()}: not available on this kernel")
            continue
        slope = least_squares_slope([s.t_s / 3600 for s in half],
                                    [getattr(s, name) for s in half])
        print(f"{name.upper()}: start {values[0]:.1f} MiB, end {values[-1]:.1f} MiB, "
              f"max {max(values):.1f} MiB, slope over the second half "
              f"{slope:+.2f} MiB/hour ({len(half)} samples)")
    print(f"store on disk: {samples[0].store_mib:.1f} -> {samples[-1].store_mib:.1f} MiB")


if __name__ == "__main__":
    main()
