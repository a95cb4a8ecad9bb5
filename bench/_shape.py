"""The cases of the reservoir-shape bench and the site files they run.

A reservoir is many small devices: every piezometer, gauge and relay its own slave with
one to a few registers. Each case here is a site of ``devices`` devices with ``points``
float32 points each (two registers a point), every Modbus TCP device on its own port as
in the side-by-side runs against the ThingsBoard gateway, or RS-485 slaves sharing one
paced pty line. Every site also holds the level gauge the bench steers (an in-process
pymodbus server, see bench/alarm_latency.py) with its alarm rule, so that the alarm
latency is taken under each case's load.

Per bench device the gateway runs what a real site runs per instrument: a quality rule
(range, offline after 3 polls) and a threshold rule on its first point. Their limits lie
outside anything the simulator serves: they are judged every poll and never fire, so the
storm limiter never holds back the one alarm that is timed.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from _common import BENCH_QUANTITIES, BenchBus, device_id

LEVEL_DEVICE = "level-1"
LEVEL_POINT = "water_level"
LEVEL_RULE = "level-alarm"
LEVEL_LIMIT = 150.0
RTU_LINE = "ttyRS485"


@dataclass(frozen=True)
class Case:
    """One shape: ``devices`` × ``points`` polled every ``interval`` s."""

    key: str
    devices: int
    points: int
    interval: float
    rtu: bool = False
    baudrate: int = 9600

    @property
    def offered(self) -> float:
        """Bench datapoints per second the schedule asks for (the level gauge aside)."""
        return self.devices * self.points / self.interval

    @property
    def label(self) -> str:
        line = f" RTU {self.baudrate} Bd" if self.rtu else ""
        return f"{self.devices} × {self.points}{line}, {self.interval:g} s"


REFERENCE = Case("10x100", 10, 100, 1.0)
CASES: tuple[Case, ...] = (
    REFERENCE,
    # The ThingsBoard comparison's small site (issue 19's table): few devices, few points.
    Case("10x10", 10, 10, 1.0),
    Case("200x1", 200, 1, 1.0),
    Case("200x10", 200, 10, 1.0),
    Case("200x1-fast", 200, 1, 0.25),
    Case("200x10-fast", 200, 10, 0.25),
    Case("rtu20x2", 20, 2, 1.0, rtu=True),
)


def listen_ports(count: int, rng: random.Random) -> list[int]:
    """``count`` distinct ports that nothing listens on, below the kernel's ephemeral
    range: 200 picks by binding port 0 repeat themselves, or collide with the outgoing
    connections (the gateway's own) that the ephemeral range hands out meanwhile."""
    ports: set[int] = set()
    while len(ports) < count:
        port = rng.randrange(20000, 32000)
        if port in ports:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.add(port)
    return sorted(ports)


def tcp_buses(case: Case, rng: random.Random) -> list[BenchBus]:
    """One Modbus TCP endpoint per device, as the ThingsBoard comparison was fed."""
    return [BenchBus(port, [case.points], n)
            for n, port in enumerate(listen_ports(case.devices, rng))]


def _points(count: int, rtu: bool) -> list[dict[str, Any]]:
    if rtu:
        # Two registers a slave: two 16-bit channels in hundredths, as small loggers send.
        return [{"id": f"p{i}", "quantity": "piezometric_level" if i == 0 else "temperature",
                 "unit": "m" if i == 0 else "degC", "scale": 0.01,
                 "register": {"table": "holding", "address": i, "type": "uint16"}}
                for i in range(count)]
    return [{"id": f"p{i}", "quantity": BENCH_QUANTITIES[i % len(BENCH_QUANTITIES)],
             "unit": "m", "register": {"table": "holding", "address": 2 * i,
                                       "type": "float32"}} for i in range(count)]


def bench_devices(case: Case) -> list[dict[str, Any]]:
    """The case's devices: ``dev-NNN`` on bus ``lan-NNN`` (TCP) or all on ``rs485``."""
    return [{"id": device_id(n), "bus": "rs485" if case.rtu else f"lan-{n:03d}",
             "unit": n + 1 if case.rtu else 1, "poll_interval_s": case.interval,
             "points": _points(case.points, case.rtu)} for n in range(case.devices)]


def bench_buses(case: Case, work: Path, tcp: list[BenchBus]) -> list[dict[str, Any]]:
    if case.rtu:
        return [{"id": "rs485", "type": "modbus_rtu", "port": str(work / RTU_LINE),
                 "baudrate": case.baudrate, "timeout_s": 0.5}]
    return [{"id": f"lan-{bus.first_device:03d}", "type": "modbus_tcp",
             "host": "127.0.0.1", "port": bus.port, "timeout_s": 1.0} for bus in tcp]


def instrument_rules(case: Case) -> list[dict[str, Any]]:
    """A quality and a threshold rule per bench device, on its first point, never firing."""
    rules: list[dict[str, Any]] = []
    for n in range(case.devices):
        point = f"{device_id(n)}/p0"
        rules.append({"id": f"quality-{n:03d}", "type": "quality", "point": point,
                      "range": [-1.0e6, 1.0e6], "offline": {"after": 3}})
        rules.append({"id": f"high-{n:03d}", "type": "threshold", "point": point,
                      "high": [{"severity": "warning", "value": 1.0e6}]})
    return rules


def site_files(case: Case, work: Path, broker_port: int, level_port: int,
               tcp: list[BenchBus], store: Mapping[str, Any] | None = None,
               ) -> tuple[Path, Path]:
    """(the gateway's site file, the simulator's): the same bench devices, the level
    gauge only in the gateway's (the bench serves it itself); the gateway's store with
    the ``store`` settings on top (``synchronous``, ``commit_window_ms``)."""
    base: dict[str, Any] = {
        "site": {"id": "bench", "levels": {"flood_limit": 123.5, "design_flood": 124.8}},
        "gateway": {"id": "gw"},
        "mqtt": {"host": "127.0.0.1", "port": broker_port},
        "store": {"path": str(work / "edge.db")},
        "health": {"interval_s": 10.0},
        "logging": {"level": "warning"},
    }
    sim = {**base, "store": {"path": str(work / "sim.db")},
           "buses": bench_buses(case, work, tcp), "devices": bench_devices(case)}
    level_bus = {"id": "level-lan", "type": "modbus_tcp", "host": "127.0.0.1",
                 "port": level_port, "timeout_s": 1.0}
    level = {"id": LEVEL_DEVICE, "bus": "level-lan", "unit": 1,
             "poll_interval_s": case.interval,
             "points": [{"id": LEVEL_POINT, "quantity": "water_level", "unit": "m",
                         "register": {"table": "holding", "address": 0, "type": "float32"}}]}
    alarm = {"id": LEVEL_RULE, "type": "threshold", "point": f"{LEVEL_DEVICE}/{LEVEL_POINT}",
             "high": [{"severity": "alarm", "value": LEVEL_LIMIT}]}
    gateway = {**base, "store": {**base["store"], **(store or {})},
               "buses": [*sim["buses"], level_bus],
               "devices": [*sim["devices"], level],
               "rules": [*instrument_rules(case), alarm]}
    paths = work / "site.yaml", work / "sim.yaml"
    for path, config in zip(paths, (gateway, sim), strict=True):
        path.write_text(yaml.safe_dump(config, sort_keys=False))
    return paths
