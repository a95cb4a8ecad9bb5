"""What the keeper's page (issue #17) costs the running daemon: RSS and start-up.

The site of bench/startup.py (1,000 points on 10 Modbus TCP devices polled every 1 s, 5
rules), served by one ``edge simulate``, with a private Mosquitto and a subscriber, all on
127.0.0.1. Runs alternate between the site without ``web:`` and with it (listening on
127.0.0.1, a PIN set); each run has a fresh store and bytecode cached as an installed
package has it (one discarded run first). Per run, from just before the exec:

* exec -> READY=1 on a NOTIFY_SOCKET the bench binds, as systemd does for Type=notify;
* with the page: READY=1 -> the first page answered (GET /);
* RSS (VmRSS) and USS of the gateway ``--settle`` seconds after its first reading at the
  subscriber; with the page, again after 200 pages (overview, alarms, devices, the level's
  24 h plot in turn) were served.

Usage: python bench/web_daemon.py [--runs 5] [--settle 20]
"""

from __future__ import annotations

import argparse
import http.client
import os
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from _common import (
    Subscriber,
    bench_site_config,
    free_port,
    machine,
    plan_buses,
    proc_memory_mib,
    start_broker,
    start_edge,
    start_simulators,
    stop_all,
)
from startup import site_rules, wait_ready

if TYPE_CHECKING:
    from tests.support import EdgeProcess

GATEWAY_ID = "gw"
TIMEOUT_S = 60.0
PAGES = ("/", "/alarms", "/devices", "/plot/dev-000/p0?period=24h")


@dataclass
class Run:
    page: bool
    ready_s: float
    first_page_s: float | None  # READY -> the first page answered
    rss: float
    uss: float
    rss_after_pages: float | None = None
    uss_after_pages: float | None = None


def get(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def first_page(port: int, deadline: float) -> float:
    """time.monotonic() when GET / was first answered with 200."""
    while time.monotonic() < deadline:
        try:
            if get(port, "/") == 200:
                return time.monotonic()
        except OSError:
            time.sleep(0.005)
    raise TimeoutError("the page never answered")


def one_run(work: Path, name: str, base: dict[str, Any], sub: Subscriber, page: bool,
            settle_s: float) -> Run:
    config = dict(base)
    config["store"] = {**base["store"], "path": str(work / f"{name}.db")}
    web_port = free_port()
    if page:
        config["web"] = {**base["web"], "listen": f"127.0.0.1:{web_port}"}
    else:
        config.pop("web", None)
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    address = str(work / f"notify-{name}.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    gateway: EdgeProcess | None = None
    env = {"PYTHONPYCACHEPREFIX": str(work / "pycache"), "PYTHONDONTWRITEBYTECODE": "",
           "NOTIFY_SOCKET": address}
    try:
        sock.bind(address)
        with sub.cond:
            seen = len(sub.arrivals)
        start = time.monotonic()
        gateway = start_edge(["run", "-c", str(path), "--log-level", "warning"],
                             work / f"gw-{name}.log", env=env)
        ready = wait_ready(sock, start + TIMEOUT_S)
        answered = first_page(web_port, start + TIMEOUT_S) - ready if page else None
        if not sub.wait_for(lambda s: any(a.readings for a in s.arrivals[seen:]), TIMEOUT_S):
            raise TimeoutError("no reading at the subscriber:\n" + gateway.output()[-2000:])
        time.sleep(settle_s)
        pid = gateway.proc.pid
        memory = proc_memory_mib(pid)
        run = Run(page, ready - start, answered, memory["rss"], memory["uss"])
        if page:
            for i in range(200):
                status = get(web_port, PAGES[i % len(PAGES)])
                assert status == 200, (PAGES[i % len(PAGES)], status)
            after = proc_memory_mib(pid)
            run.rss_after_pages, run.uss_after_pages = after["rss"], after["uss"]
        return run
    finally:
        stop_all([gateway])
        sock.close()
        Path(address).unlink(missing_ok=True)


def summary(values: list[float], unit: str, digits: int = 1) -> str:
    return (f"median {statistics.median(values):.{digits}f} {unit} (min {min(values):.{digits}f},"
            f" max {max(values):.{digits}f}; {len(values)} runs)")


def report(runs: list[Run]) -> None:
    print(f"machine: {machine()}")
    print("site: 1,000 points (10 Modbus TCP devices x 100 points, polled every 1 s), 5 rules;"
          " fresh store each run; bytecode cached")
    for page in (False, True):
        chosen = [r for r in runs if r.page == page]
        print("with web: (page on 127.0.0.1, PIN set)" if page else "without web:")
        print(f"  exec -> READY=1             {summary([r.ready_s for r in chosen], 's', 3)}")
        if page:
            print(f"  READY=1 -> first page       "
                  f"{summary([r.first_page_s or 0.0 for r in chosen], 's', 3)}")
        print(f"  RSS after the first reading {summary([r.rss for r in chosen], 'MiB')}")
        print(f"  USS after the first reading {summary([r.uss for r in chosen], 'MiB')}")
        if page:
            print(f"  RSS after 200 pages         "
                  f"{summary([r.rss_after_pages or 0.0 for r in chosen], 'MiB')}")
            print(f"  USS after 200 pages         "
                  f"{summary([r.uss_after_pages or 0.0 for r in chosen], 'MiB')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of each configuration")
    parser.add_argument("--settle", type=float, default=20.0,
                        help="seconds after the first reading before RSS is read")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from edge.web.pin import hash_pin

    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="bench-web-daemon-",
                                     dir=os.environ.get("BENCH_DIR")) as tmp:
        work = Path(tmp)
        broker = start_broker(work)
        buses = plan_buses(1000)
        sims: list[EdgeProcess] = []
        sub: Subscriber | None = None
        try:
            base = yaml.safe_load(bench_site_config(
                work, broker.port, buses, rules=site_rules(), gateway_id=GATEWAY_ID,
                name="base").read_text())
            base["web"] = {"listen": "127.0.0.1:8080", "pin_hash": hash_pin("246810")}
            sims = start_simulators(work, buses, 1)
            sub = Subscriber(broker.port, f"reservoir/bench/{GATEWAY_ID}/telemetry")
            one_run(work, "warmup", base, sub, True, 0)  # fills the bytecode cache
            for i in range(args.runs):
                for page in ((False, True) if i % 2 == 0 else (True, False)):
                    run = one_run(work, f"{'web' if page else 'plain'}-{i}", base, sub, page,
                                  args.settle)
                    runs.append(run)
                    print(f"run {i + 1}/{args.runs} {'web' if page else 'plain'}: READY "
                          f"{run.ready_s:.3f} s, RSS {run.rss:.1f} MiB"
                          + (f", {run.rss_after_pages:.1f} MiB after 200 pages"
                             if page else ""), file=sys.stderr, flush=True)
        finally:
            if sub is not None:
                sub.close()
            stop_all(sims)
            broker.stop()
    report(runs)


if __name__ == "__main__":
    main()
