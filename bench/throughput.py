"""End-to-end throughput: points polled every second -> readings/s at a subscriber, and
the gateway's CPU per reading.

For each site size (10, 100, 1,000 and 5,000 points by default) it runs, all on 127.0.0.1:

* ``edge simulate``: Modbus TCP devices of 100 float32 points each (10 points = 1 device
  of 10), ten devices per TCP endpoint (5,000 points: 50 devices on 5 endpoints), served
  by --simulators processes (default 1: one process serves 5,000 points a second with
  CPU to spare, see its column; with more, endpoints are dealt round robin);
* ``edge run``: the gateway, polling every device every --interval s (1 s), one threshold
  rule per device on its p0 (a water level crossing the flood-limit level every 120 s);
* a private Mosquitto and a subscriber on ``reservoir/bench/gw/#``.

After the first reading and --warmup seconds, it measures over --seconds: readings/s
delivered at the subscriber, the gateway's CPU seconds (utime + stime from /proc/PID/stat)
per 1,000 delivered readings, its CPU % of one core, the simulators' and the broker's
CPU %, and readings that arrived bad (a device timing out: the simulator not keeping up).
"Largest site on one core" is 1,000 / (CPU s per 1,000 readings): an extrapolation that
assumes the cost per reading stays constant up to 100 % of a core, not a measurement.

Usage: python bench/throughput.py [--seconds 60] [--sizes 10,100,1000,5000]
       [--warmup 10] [--interval 1.0] [--simulators 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from _common import (
    Broker,
    Subscriber,
    bench_site_config,
    machine,
    median,
    percentile,
    plan_buses,
    proc_cpu_seconds,
    start_broker,
    start_edge,
    start_simulators,
    tear_down,
)

if TYPE_CHECKING:
    from tests.support import EdgeProcess

GATEWAY_ID = "gw"
ROOT = f"reservoir/bench/{GATEWAY_ID}"


@dataclass
class Result:
    points: int
    devices: int
    endpoints: int
    simulators: int
    offered: float  # readings/s the schedule asks for
    delivered: float  # readings/s at the subscriber over the window
    cpu_per_1000: float  # gateway CPU s per 1,000 delivered readings
    cpu_pct: float  # gateway, % of one core
    sim_pct: list[float]  # each simulator process, % of one core
    broker_pct: float
    bad: int  # readings in the window whose quality was not good
    age_p50_ms: float  # acquisition -> subscriber, per message
    age_p99_ms: float
    outbox_depth: int | None  # from the last health message
    device_errors: int | None


def threshold_rules(devices: int) -> list[dict[str, Any]]:
    return [{"id": f"level-high-{d:03d}", "type": "threshold", "point": f"dev-{d:03d}/p0",
             "high": [{"severity": "warning", "value": "flood_limit"},
                      {"severity": "alarm", "value": "design_flood"}],
             "hysteresis": 0.05} for d in range(devices)]


def last_health(sub: Subscriber) -> dict[str, Any] | None:
    with sub.cond:
        bodies = [a.body for a in sub.arrivals if a.topic.endswith("/health") and a.body]
    return bodies[-1] if bodies else None


def measure(work: Path, broker: Broker, points: int, args: argparse.Namespace) -> Result:
    buses = plan_buses(points, args.per_device, args.devices_per_bus)
    devices = sum(len(b.devices) for b in buses)
    processes = max(1, min(len(buses), args.simulators))
    size_dir = work / f"size-{points}"
    size_dir.mkdir()
    config = bench_site_config(size_dir, broker.port, buses, interval=args.interval,
                               rules=threshold_rules(devices), gateway_id=GATEWAY_ID,
                               name="site", health_s=5.0)
    sims: list[EdgeProcess] = []
    sub: Subscriber | None = None
    gateway: EdgeProcess | None = None
    try:
        sims = start_simulators(size_dir, buses, processes)
        sub = Subscriber(broker.port, f"{ROOT}/#", keep=("/health",))
        gateway = start_edge(["run", "-c", str(config), "--log-level", "warning"],
                             size_dir / "gw.log")
        if not sub.wait_for(lambda s: s.readings > 0, 60):
            raise RuntimeError(f"no reading within 60 s; see {size_dir / 'gw.log'}")
        time.sleep(args.warmup)
        pids = [gateway.proc.pid, *(s.proc.pid for s in sims)]
        assert broker.proc is not None
        c0 = [proc_cpu_seconds(p) for p in pids]
        b0 = proc_cpu_seconds(broker.proc.pid)
        t0 = time.monotonic()
        time.sleep(args.seconds)
        t1 = time.monotonic()
        c1 = [proc_cpu_seconds(p) for p in pids]
        b1 = proc_cpu_seconds(broker.proc.pid)
        if gateway.proc.poll() is not None:
            raise RuntimeError(f"gateway exited ({gateway.proc.returncode}); "
                               f"see {size_dir / 'gw.log'}")
        health = last_health(sub)
    finally:
        tear_down(gateway, sims, sub)
    span = t1 - t0
    assert sub is not None
    with sub.cond:
        window = [a for a in sub.arrivals if t0 <= a.at < t1 and a.readings]
    delivered = sum(a.readings for a in window)
    ages = [a.age_ms for a in window]
    gw_cpu = c1[0] - c0[0]
    errors = None
    depth = None
    if health:
        depth = int(health.get("outbox", {}).get("depth", 0))
        errors = sum(int(d.get("errors", 0)) for d in health.get("devices", []))
    return Result(
        points=points, devices=devices, endpoints=len(buses), simulators=len(sims),
        offered=points / args.interval, delivered=delivered / span,
        cpu_per_1000=gw_cpu / delivered * 1000 if delivered else float("nan"),
        cpu_pct=gw_cpu / span * 100,
        sim_pct=[(b - a) / span * 100 for a, b in zip(c0[1:], c1[1:], strict=True)],
        broker_pct=(b1 - b0) / span * 100, bad=sum(a.bad for a in window),
        age_p50_ms=median(ages) if ages else float("nan"),
        age_p99_ms=percentile(ages, 99), outbox_depth=depth, device_errors=errors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60, help="measured window")
    parser.add_argument("--warmup", type=float, default=10,
                        help="seconds after the first reading before the window")
    parser.add_argument("--sizes", default="10,100,1000,5000",
                        help="points per site, comma-separated")
    parser.add_argument("--interval", type=float, default=1.0, help="poll interval, s")
    parser.add_argument("--per-device", type=int, default=100,
                        help="points per device; 1 or 2 is the many-small-devices shape of "
                             "a real reservoir (every piezometer its own slave)")
    parser.add_argument("--devices-per-bus", type=int, default=10,
                        help="devices per Modbus TCP endpoint")
    parser.add_argument("--simulators", type=int, default=1,
                        help="`edge simulate` processes sharing the endpoints")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bench-throughput-",
                                     dir=os.environ.get("BENCH_DIR")) as tmp:
        work = Path(tmp)
        broker = start_broker(work)
        try:
            for points in sizes:
                print(f"measuring {points} points ...", file=sys.stderr, flush=True)
                results.append(measure(work, broker, points, args))
        finally:
            broker.stop()
    print(f"machine: {machine()}")
    print(f"poll interval {args.interval:g} s, devices of up to {args.per_device} float32 "
          f"points, {args.devices_per_bus} devices per Modbus TCP endpoint, 1 threshold rule "
          f"per device; window "
          f"{args.seconds:g} s after {args.warmup:g} s of warm-up")
    header = (f"{'points':>7}{'dev':>5}{'sims':>5}{'offered/s':>11}{'delivered/s':>13}"
              f"{'CPU s/1k':>10}{'gw CPU':>8}{'sim CPU (each)':>20}{'mosq':>6}"
              f"{'bad':>6}{'age p50':>9}{'age p99':>9}{'outbox':>8}")
    print(header)
    for r in results:
        sims = " ".join(f"{p:.0f}" for p in r.sim_pct)
        print(f"{r.points:>7}{r.devices:>5}{r.simulators:>5}{r.offered:>11.0f}"
              f"{r.delivered:>13.1f}{r.cpu_per_1000:>10.3f}{r.cpu_pct:>7.1f}%"
              f"{sims + ' %':>20}{r.broker_pct:>5.1f}%{r.bad:>6}"
              f"{r.age_p50_ms:>7.0f}ms{r.age_p99_ms:>7.0f}ms"
              f"{'-' if r.outbox_depth is None else r.outbox_depth:>8}")
    print("(CPU % is of one core; age = subscriber's wall clock at arrival minus the "
          "reading's acquisition ts; outbox = depth in the last health message)")
    for r in results:
        ratio = r.delivered / r.offered if r.offered else float("nan")
        # Arrivals are counted per message: a window may hold one poll more or less of
        # each device, and acquisition-to-arrival age must stay under one interval.
        slack = args.interval / args.seconds + 0.02
        keeps_up = (abs(ratio - 1) <= slack and r.bad == 0
                    and r.age_p99_ms < args.interval * 1000)
        sim_busy = max(r.sim_pct) if r.sim_pct else 0.0
        largest = 1000 / r.cpu_per_1000 if r.cpu_per_1000 > 0 else float("nan")
        print(f"{r.points} points: delivered {ratio:.1%} of offered; "
              f"{'keeps up' if keeps_up else 'FALLS BEHIND'}"
              f"{f' ({r.bad} bad readings)' if r.bad else ''}; device errors so far "
              f"{'-' if r.device_errors is None else r.device_errors}; busiest simulator "
              f"{sim_busy:.0f} % of a core"
              f"{' (saturated: it, not the gateway, may limit)' if sim_busy > 90 else ''}; "
              f"largest site on one core ~{largest:,.0f} readings/s (extrapolated)")
    biggest = max(results, key=lambda r: r.points, default=None)
    if biggest is not None and biggest.cpu_per_1000 > 0:
        print(f"largest site the gateway keeps up with on one core: ~"
              f"{1000 / biggest.cpu_per_1000:,.0f} readings/s, i.e. ~"
              f"{1000 / biggest.cpu_per_1000 * args.interval:,.0f} points at "
              f"{args.interval:g} s (extrapolated linearly to 100 % of a core from "
              f"{biggest.cpu_per_1000:.3f} CPU s per 1,000 readings at {biggest.points} "
              f"points; smaller sites pay a fixed cost per poll and health message)")


if __name__ == "__main__":
    main()
