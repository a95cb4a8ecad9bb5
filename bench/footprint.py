"""CPU, memory and start-up of the gateway process, the figures lessons.md quotes for the
ThingsBoard gateway (14 % of a core with no device, 63-67 MiB RSS, 1.5 s from process
start to the first reading at a subscriber).

Runs `edge run` against a private Mosquitto and `edge simulate`:
* idle: no device configured; CPU % of one core over --seconds, RSS at the end;
* loaded: 10 Modbus TCP devices x 50 points polled every 0.1 s (5,000 readings/s);
* first reading: process start -> first telemetry message at a subscriber (median of 5).

Usage: python bench/footprint.py [--seconds 30]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from _common import Broker, Recorder, free_port, machine, median, start_edge, wait_for_port

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def site(work: Path, broker_port: int, modbus_port: int, devices: int, points: int,
         interval: float) -> Path:
    config: dict[str, Any] = {
        "site": {"id": "bench"}, "gateway": {"id": f"gw{time.time_ns() % 10**6}"},
        "mqtt": {"host": "127.0.0.1", "port": broker_port},
        "store": {"path": str(work / f"edge-{time.time_ns()}.db")},
        "buses": [{"id": "lan", "type": "modbus_tcp", "host": "127.0.0.1",
                   "port": modbus_port}] if devices else [],
        "devices": [{"id": f"logger-{d}", "bus": "lan", "unit": d + 1,
                     "poll_interval_s": interval,
                     "points": [{"id": f"p{i}", "quantity": "water_level", "unit": "m",
                                 "register": {"table": "holding", "address": 2 * i,
                                              "type": "float32"}} for i in range(points)]}
                    for d in range(devices)],
    }
    path = work / f"site-{time.time_ns()}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def measure(work: Path, broker: Broker, devices: int, points: int, interval: float,
            seconds: float) -> tuple[float, float, float]:
    modbus_port = free_port()
    config = site(work, broker.port, modbus_port, devices, points, interval)
    sim = start_edge(["simulate", "-c", str(config)], work / "sim.log") if devices else None
    if sim:
        wait_for_port(modbus_port)
    gateway = start_edge(["run", "-c", str(config), "--log-level", "warning"], work / "gw.log")
    try:
        time.sleep(3)  # past start-up
        c0, t0 = cpu_seconds(gateway.proc.pid), time.monotonic()
        time.sleep(seconds)
        c1, t1 = cpu_seconds(gateway.proc.pid), time.monotonic()
        rss = rss_mib(gateway.proc.pid)
        db = yaml.safe_load(config.read_text())["store"]["path"]
    finally:
        gateway.stop()
        if sim:
            sim.kill()
    import sqlite3

    conn = sqlite3.connect(db)
    stored = conn.execute("SELECT COALESCE(SUM(n), 0) FROM telemetry").fetchone()[0]
    conn.close()
    return (c1 - c0) / (t1 - t0) * 100, rss, stored


def first_reading(work: Path, broker: Broker) -> float:
    modbus_port = free_port()
    config = site(work, broker.port, modbus_port, 1, 2, 1.0)
    sim = start_edge(["simulate", "-c", str(config)], work / "sim.log")
    wait_for_port(modbus_port)
    gateway_id = yaml.safe_load(config.read_text())["gateway"]["id"]
    rec = Recorder(broker.port, f"reservoir/bench/{gateway_id}/telemetry")
    time.sleep(0.5)
    start = time.monotonic()
    gateway = start_edge(["run", "-c", str(config), "--log-level", "warning"], work / "gw.log")
    try:
        rec.wait_for(lambda r: bool(r.messages), 20, "first reading")
        return time.monotonic() - start
    finally:
        gateway.stop()
        sim.kill()
        rec.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-footprint-"))
    broker = Broker(work)
    broker.start()
    try:
        print(f"machine: {machine()}")
        idle_cpu, idle_rss, _ = measure(work, broker, 0, 0, 1.0, args.seconds)
        print(f"idle (no device): {idle_cpu:.2f} % of one core, RSS {idle_rss:.1f} MiB")
        for devices, points, interval in ((1, 10, 1.0), (10, 50, 0.1)):
            rate = devices * points / interval
            cpu, rss, stored = measure(work, broker, devices, points, interval, args.seconds)
            print(f"{devices} devices x {points} points every {interval} s "
                  f"({rate:.0f} readings/s offered): {cpu:.1f} % of one core, RSS {rss:.1f} "
                  f"MiB, {stored} readings stored")
        starts = [first_reading(work, broker) for _ in range(5)]
        print(f"process start -> first reading at a subscriber: median {median(starts):.2f} s "
              f"(runs: {', '.join(f'{s:.2f}' for s in starts)})")
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
