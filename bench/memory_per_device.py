"""Gateway memory per device and per bus, in the reservoir's shape: many small slaves.

Every piezometer, gauge and relay of a reservoir is its own Modbus slave with one or two
registers. This runs ``edge run`` with 0, 1, 50 and 200 such devices (one float32 point,
two holding registers each, polled every --interval s) served by ``edge simulate`` on
loopback, a private Mosquitto and a subscriber, in two shapes:

* gateway: every device is a unit id behind one Modbus TCP endpoint (a TCP-to-RS-485
  gateway in front of the line): one bus;
* endpoints: every device has its own endpoint (one port each): one bus per device.

Once every device has been polled at least twice it samples the gateway's RSS, PSS and
USS every second for --seconds and prints the medians, then the floor: the bare
interpreter, and the same interpreter after importing what ``edge run`` imports (so what
is left of the 0-device gateway is running cost: threads, SQLite's cache, buffers).

Usage: python bench/memory_per_device.py [--counts 0,1,50,200] [--seconds 15]
       [--shapes gateway,endpoints] [--interval 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import (
    REPO,
    BenchBus,
    Subscriber,
    bench_site_config,
    free_port,
    free_ports,
    machine,
    proc_memory_mib,
    start_broker,
    start_edge,
    start_simulators,
    tear_down,
)

GATEWAY_ID = "gw"
# What `edge run` imports before its first poll, in a fresh interpreter: the floor.
DAEMON_IMPORTS = ("import edge.cli, edge.gateway, drivers.registry, pymodbus.client, "
                  "pymodbus.framer")
FLOOR_SCRIPT = """
import sys
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024
bare = rss()
{imports}
print(bare, rss())
"""


def buses_for(shape: str, count: int) -> list[BenchBus]:
    if count == 0:
        return []
    if shape == "gateway":
        return [BenchBus(free_port(), [1] * count, 0)]
    return [BenchBus(port, [1], n) for n, port in enumerate(free_ports(count))]


def measure(work: Path, shape: str, count: int, seconds: float,
            interval: float) -> dict[str, float]:
    """Median RSS/PSS/USS (MiB) of a gateway polling ``count`` one-point devices."""
    broker = start_broker(work)
    buses = buses_for(shape, count)
    config = bench_site_config(work, broker.port, buses, interval=interval,
                               gateway_id=GATEWAY_ID, store=work / f"{shape}-{count}.db",
                               name=f"{shape}-{count}")
    sims, sub, gateway = [], None, None
    try:
        if buses:
            sims = start_simulators(work, buses, 2 if len(buses) > 1 else 1)
        sub = Subscriber(broker.port, f"reservoir/bench/{GATEWAY_ID}/#")
        gateway = start_edge(["run", "-c", str(config), "--log-level", "warning"],
                             work / f"gw-{shape}-{count}.log")
        # Every device polled twice (one reading each), or a few seconds of idling.
        if count and not sub.wait_for(lambda s: s.readings >= 2 * count, 60):
            raise RuntimeError(f"{sub.readings} of {2 * count} readings within 60 s:\n"
                               + gateway.output()[-2000:])
        if not count:
            time.sleep(3)
        samples: dict[str, list[float]] = {"rss": [], "pss": [], "uss": []}
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if gateway.proc.poll() is not None:
                raise RuntimeError("gateway exited:\n" + gateway.output()[-2000:])
            for key, value in proc_memory_mib(gateway.proc.pid).items():
                samples[key].append(value)
            time.sleep(1)
        medians = {key: statistics.median(values) for key, values in samples.items()}
        medians["readings_per_s"] = sub.readings_between(end - seconds, end) / seconds
        return medians
    finally:
        tear_down(gateway, sims, sub, broker)


def floor() -> tuple[float, float]:
    """RSS (MiB) of a bare interpreter and of one that imported what the daemon does."""
    script = FLOOR_SCRIPT.format(imports=DAEMON_IMPORTS)
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, check=True,
                         capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)}).stdout.split()
    return float(out[0]), float(out[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="0,1,50,200")
    parser.add_argument("--shapes", default="gateway,endpoints")
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    rows: list[tuple[str, int, dict[str, float]]] = []
    for shape in args.shapes.split(","):
        for count in counts:
            if count == 0 and rows and rows[-1][1] == 0:
                continue
            with tempfile.TemporaryDirectory(prefix="bench-memdev-",
                                             dir=os.environ.get("BENCH_DIR")) as tmp:
                figures = measure(Path(tmp), shape, count, args.seconds, args.interval)
            rows.append((shape if count else "none", count, figures))
            print(f"{shape:>9} {count:>4} devices: RSS {figures['rss']:.1f} MiB",
                  file=sys.stderr, flush=True)
    bare, imported = floor()
    print(f"machine: {machine()}")
    print(f"one float32 point (2 registers) per device, polled every {args.interval:g} s; "
          f"medians of {args.seconds:g} one-second samples")
    print(f"{'shape':>9} {'devices':>8} {'RSS':>7} {'PSS':>7} {'USS':>7}  (MiB)  readings/s")
    for shape, count, f in rows:
        print(f"{shape:>9} {count:>8} {f['rss']:>7.1f} {f['pss']:>7.1f} {f['uss']:>7.1f}"
              f"         {f['readings_per_s']:>7.1f}")
    print(f"floor: bare interpreter {bare:.1f} MiB; after the daemon's imports "
          f"({DAEMON_IMPORTS.removeprefix('import ')}) {imported:.1f} MiB")


if __name__ == "__main__":
    main()
