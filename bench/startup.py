"""Start-up: exec of the gateway -> READY=1 on its NOTIFY_SOCKET, and -> first reading.

A 1,000-point site (10 Modbus TCP devices x 100 float32 points on one endpoint, polled
every second, 5 rules: thresholds, a rate and a quality screen) served by one
``edge simulate``, a private Mosquitto and a subscriber, all on 127.0.0.1. The bench binds
an AF_UNIX datagram socket, as systemd does for Type=notify, and starts ``python -m edge
run`` with NOTIFY_SOCKET pointing at it; each run has a fresh store (a first start). It
times, from just before the exec (time.monotonic() in this process):

* READY=1: the datagram carrying it arrives (config validated, store open, rules built);
* the first telemetry message at the subscriber (first poll stored and published).

Two bytecode situations, since this checkout may run with PYTHONDONTWRITEBYTECODE=1:
``cached``: compiled bytecode available for every module, as a pip-installed package has
it (PYTHONPYCACHEPREFIX to a private directory, filled by one discarded run first);
``source``: the environment as it is (without a __pycache__ in the project's folders its
modules are compiled at every start). --bytecode chooses; both by default.

Usage: python bench/startup.py [--runs 7] [--bytecode both|cached|source]
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from _common import (
    REPO,
    Broker,
    Subscriber,
    bench_site_config,
    machine,
    median,
    plan_buses,
    start_broker,
    start_edge,
    start_simulators,
    stop_all,
)

if TYPE_CHECKING:
    from tests.support import EdgeProcess

GATEWAY_ID = "gw"
TIMEOUT_S = 60.0


@dataclass
class Run:
    ready_s: float
    first_reading_s: float


def site_rules() -> list[dict[str, Any]]:
    return [
        {"id": "level-high", "type": "threshold", "point": "dev-000/p0",
         "high": [{"severity": "warning", "value": "flood_limit"},
                  {"severity": "alarm", "value": "design_flood"}], "hysteresis": 0.05},
        {"id": "level-rise", "type": "rate", "point": "dev-000/p0", "method": "least_squares",
         "window": "1h", "per": "m/h", "high": [{"severity": "warning", "value": 0.5}]},
        {"id": "level-quality", "type": "quality", "point": "dev-000/p0",
         "range": [100.0, 130.0], "offline": {"after": 3}, "jump": {"max_step": 0.5}},
        {"id": "seepage-high", "type": "threshold", "point": "dev-001/p1",
         "high": [{"severity": "warning", "value": 150.0}]},
        {"id": "piezo-high", "type": "threshold", "point": "dev-002/p2",
         "high": [{"severity": "alarm", "value": 125.0}], "hysteresis": 0.05},
    ]


def wait_ready(sock: socket.socket, deadline: float) -> float:
    """time.monotonic() when a datagram with a READY=1 line arrived."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no READY=1 on NOTIFY_SOCKET")
        readable, _, _ = select.select([sock], [], [], remaining)
        if not readable:
            continue
        data = sock.recv(4096)
        now = time.monotonic()
        if "READY=1" in data.decode(errors="replace").split("\n"):
            return now


def one_run(work: Path, name: str, base_config: dict[str, Any], sub: Subscriber,
            env: dict[str, str]) -> Run:
    config = dict(base_config)
    config["store"] = {**base_config["store"], "path": str(work / f"run-{name}.db")}
    path = work / f"run-{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    address = str(work / f"notify-{name}.sock")  # AF_UNIX paths must stay under 108 bytes
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    gateway: EdgeProcess | None = None
    try:
        sock.bind(address)
        with sub.cond:
            seen = len(sub.arrivals)
        start = time.monotonic()
        gateway = start_edge(["run", "-c", str(path), "--log-level", "warning"],
                             work / f"gw-{name}.log", env={**env, "NOTIFY_SOCKET": address})
        ready = wait_ready(sock, start + TIMEOUT_S)

        def first(s: Subscriber) -> bool:
            return any(a.readings for a in s.arrivals[seen:])

        if not sub.wait_for(first, max(1.0, start + TIMEOUT_S - time.monotonic())):
            raise TimeoutError("no reading at the subscriber:\n" + gateway.output()[-2000:])
        with sub.cond:
            reading_at = next(a.at for a in sub.arrivals[seen:] if a.readings)
        return Run(ready - start, reading_at - start)
    finally:
        stop_all([gateway])
        sock.close()
        Path(address).unlink(missing_ok=True)


def measure(work: Path, broker: Broker, base_config: dict[str, Any], runs: int,
            env: dict[str, str], label: str, warmup: bool) -> list[Run]:
    sub = Subscriber(broker.port, f"reservoir/bench/{GATEWAY_ID}/telemetry")
    try:
        if warmup:
            one_run(work, f"{label}-warmup", base_config, sub, env)
        results = []
        for i in range(runs):
            results.append(one_run(work, f"{label}-{i}", base_config, sub, env))
            print(f"{label} run {i + 1}/{runs}: READY=1 {results[-1].ready_s:.3f} s, first "
                  f"reading {results[-1].first_reading_s:.3f} s", file=sys.stderr, flush=True)
            time.sleep(0.5)
        return results
    finally:
        sub.close()


def summary(values: list[float]) -> str:
    return (f"median {median(values):.3f} s (min {min(values):.3f}, max {max(values):.3f}; "
            f"runs: {', '.join(f'{v:.2f}' for v in values)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--bytecode", choices=("both", "cached", "source"), default="both")
    args = parser.parse_args()
    modes = ("cached", "source") if args.bytecode == "both" else (args.bytecode,)
    results: dict[str, list[Run]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-startup-",
                                     dir=os.environ.get("BENCH_DIR")) as tmp:
        work = Path(tmp)
        broker = start_broker(work)
        buses = plan_buses(1000)
        sims: list[EdgeProcess] = []
        try:
            config_path = bench_site_config(work, broker.port, buses, rules=site_rules(),
                                            gateway_id=GATEWAY_ID, name="base")
            base_config = yaml.safe_load(config_path.read_text())
            sims = start_simulators(work, buses, 1)
            for mode in modes:
                if mode == "cached":
                    env = {"PYTHONPYCACHEPREFIX": str(work / "pycache"),
                           "PYTHONDONTWRITEBYTECODE": ""}
                else:
                    env = {}
                results[mode] = measure(work, broker, base_config, args.runs, env, mode,
                                        warmup=mode == "cached")
        finally:
            stop_all(sims)
            broker.stop()
    print(f"machine: {machine()}")
    print("site: 1,000 points (10 Modbus TCP devices x 100 points, polled every 1 s), "
          "5 rules; fresh store each run; time from just before the exec")
    project_cache = (REPO / "edge" / "__pycache__").is_dir()
    for mode, runs in results.items():
        if mode == "cached":
            what = "bytecode cached (as installed), after one discarded run"
        else:
            what = (f"environment as is (PYTHONDONTWRITEBYTECODE="
                    f"{os.environ.get('PYTHONDONTWRITEBYTECODE', '')!r}, project __pycache__ "
                    f"{'present' if project_cache else 'absent: its modules compiled each start'})")
        print(f"{what}, {len(runs)} runs:")
        print(f"  exec -> READY=1:                     {summary([r.ready_s for r in runs])}")
        print(f"  exec -> first reading at subscriber: "
              f"{summary([r.first_reading_s for r in runs])}")


if __name__ == "__main__":
    main()
