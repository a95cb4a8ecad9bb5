"""A 100-point RS-485 site for the RTU benches, and a cycle meter for the gateway's poller.

The field side runs as ``edge simulate`` in its own process: a simulated RS-485 line over
pseudo-terminals (simulator/serialwire.py) that holds every byte for its wire time at the
bus's baud rate, with slaves answering after the 3.5-character silence. A pty alone would
deliver instantly; the pacing is what makes gateway cycle times comparable with wire time.
The gateway side is the daemon's own BusTask, in this process.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from _common import start_edge

from drivers.modbus import RTU_CHAR_BITS, rtu_silence_s
from drivers.registry import make_poller
from edge.config import load_config
from vocab.model import PollResult

DEVICES = 7


def _level_logger() -> list[dict[str, Any]]:
    points: list[dict[str, Any]] = [
        {
            "id": "water_level",
            "quantity": "water_level",
            "unit": "m",
            "register": {"table": "holding", "address": 0, "type": "float32"},
        },
        {
            "id": "rain",
            "quantity": "rainfall_counter",
            "unit": "tips",
            "register": {"table": "holding", "address": 2, "type": "uint16"},
        },
        {
            "id": "temp",
            "quantity": "temperature",
            "unit": "degC",
            "scale": 0.1,
            "register": {"table": "holding", "address": 3, "type": "int16"},
        },
        {
            "id": "battery",
            "quantity": "battery_voltage",
            "unit": "V",
            "scale": 0.01,
            "register": {"table": "holding", "address": 4, "type": "uint16"},
        },
    ]
    points += [
        {
            "id": f"status_{b}",
            "quantity": "status",
            "register": {"table": "holding", "address": 5, "bit": b},
        }
        for b in range(5)
    ]
    return points


def _vw_reader() -> list[dict[str, Any]]:
    # 16 vibrating-wire channels in 0.1 Hz from register 100 and 4 thermistors (§1.1).
    points: list[dict[str, Any]] = [
        {
            "id": f"f{c:02d}",
            "quantity": "vw_frequency",
            "unit": "Hz",
            "scale": 0.1,
            "register": {"table": "input", "address": 100 + c, "type": "uint16"},
        }
        for c in range(16)
    ]
    points += [
        {
            "id": f"t{c}",
            "quantity": "temperature",
            "unit": "degC",
            "scale": 0.1,
            "register": {"table": "input", "address": 116 + c, "type": "int16"},
        }
        for c in range(4)
    ]
    return points


def _weir_logger() -> list[dict[str, Any]]:
    return [
        {
            "id": "head",
            "quantity": "weir_head",
            "unit": "m",
            "scale": 0.001,
            "register": {"table": "holding", "address": 0, "type": "int32"},
        },
        {
            "id": "flow",
            "quantity": "seepage_flow",
            "unit": "L/s",
            "register": {"table": "holding", "address": 10, "type": "float32"},
        },
        {
            "id": "temp",
            "quantity": "temperature",
            "unit": "degC",
            "scale": 0.1,
            "register": {"table": "holding", "address": 20, "type": "int16"},
        },
    ]


def _power_monitor() -> list[dict[str, Any]]:
    return [
        {
            "id": f"v{c}",
            "quantity": "battery_voltage",
            "unit": "V",
            "scale": 0.01,
            "register": {"table": "input", "address": c, "type": "uint16"},
        }
        for c in range(8)
    ]


def hundred_point_site(work: Path, coalesce: bool, baudrate: int) -> Path:
    kinds = [
        ("level-1", _level_logger()),
        *[(f"vw-{i}", _vw_reader()) for i in range(1, 5)],
        ("weir-1", _weir_logger()),
        ("power-1", _power_monitor()),
    ]
    devices = [
        {
            "id": name,
            "bus": "rs485",
            "unit": unit,
            "poll_interval_s": 0.001,
            "coalesce": coalesce,
            "points": points,
        }
        for unit, (name, points) in enumerate(kinds, start=1)
    ]
    assert sum(len(d["points"]) for d in devices) == 100
    config = {
        "site": {"id": "bench", "levels": {"flood_limit": 123.5}},
        "gateway": {"id": "gw-bench"},
        "mqtt": {"host": "127.0.0.1"},
        "store": {"path": str(work / "edge.db")},
        "buses": [
            {
                "id": "rs485",
                "type": "modbus_rtu",
                "port": str(work / "ttyRS485"),
                "baudrate": baudrate,
                "timeout_s": 1.0,
            }
        ],
        "devices": devices,
    }
    path = work / "site.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@dataclass
class CycleFigures:
    requests: float  # per cycle
    bytes_on_line: float  # per cycle, both directions
    wire_s: float  # bytes × 11 bits / baud + two 3.5-character gaps per request
    cycle_s: float  # median measured time of a whole cycle (every device polled once)
    cycle_spread_s: tuple[float, float]  # min and max cycle
    cycles: int


def measure_cycles(coalesce: bool, baudrate: int, cycles: int) -> CycleFigures:
    """Poll the 100-point site with the bus saturated; figures per complete cycle."""
    work = Path(tempfile.mkdtemp(prefix="reservoir-edge-bench-"))
    config = hundred_point_site(work, coalesce, baudrate)
    settings = load_config(config).settings
    sim = start_edge(
        ["simulate", "-c", str(config), "--log-level", "warning"], work / "simulate.log"
    )
    try:
        deadline = time.monotonic() + 15
        while not (work / "ttyRS485").exists():
            if time.monotonic() > deadline or sim.proc.poll() is not None:
                raise RuntimeError(f"simulator did not start: {sim.output()}")
            time.sleep(0.05)
        return asyncio.run(_measure(settings, cycles + 1, baudrate))
    finally:
        sim.stop()


async def _measure(settings: Any, cycles: int, baudrate: int) -> CycleFigures:
    bus = settings.buses[0]
    boundaries: list[tuple[float, int, int, int]] = []  # time, requests, bytes, ok polls
    done = asyncio.Event()
    counts = {"requests": 0, "ok": 0, "polls": 0}
    poller: Any = None

    async def sink(result: PollResult) -> None:
        counts["requests"] += result.requests
        counts["ok"] += result.ok
        counts["polls"] += 1
        if counts["polls"] % DEVICES == 0:
            health = poller.health
            boundaries.append(
                (
                    time.monotonic(),
                    counts["requests"],
                    health.bytes_sent + health.bytes_received,
                    counts["ok"],
                )
            )
            if len(boundaries) > cycles:
                poller.stop()
                done.set()

    poller = make_poller(bus, settings.devices, sink)
    task = asyncio.create_task(poller.run())
    await asyncio.wait_for(done.wait(), timeout=600)
    await task
    # The first cycle includes opening the port: measure from its end.
    steady = boundaries[1:]
    spans = [b[0] - a[0] for a, b in itertools.pairwise(steady)]
    n = len(spans)
    requests = (steady[-1][1] - steady[0][1]) / n
    line_bytes = (steady[-1][2] - steady[0][2]) / n
    if steady[-1][3] - steady[0][3] != n * DEVICES:
        raise RuntimeError("some polls failed during the measurement")
    wire = line_bytes * RTU_CHAR_BITS / baudrate + requests * 2 * rtu_silence_s(baudrate)
    return CycleFigures(
        requests, line_bytes, wire, statistics.median(spans), (min(spans), max(spans)), n
    )
