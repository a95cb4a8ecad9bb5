"""A simulated reservoir: Modbus servers that answer like the site's field devices.

``edge simulate -c site.yaml`` serves every Modbus TCP device of a configuration on the
host and port its bus names, with plausible values that change over time: a rain storm
passes every ``period_s`` seconds, the tipping-bucket counter counts its tips, the
reservoir level rises behind the rain and crosses the flood-limit level, the seepage
pressure follows the level with a lag, and GNSS displacement creeps slowly.

Points can be pinned to a script of values (``--values FILE``: a mapping of
``device/point`` to ``[[t_s, value], ...]``, each value held from its time on), which is
how the end-to-end tests drive a known series through the whole gateway.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog
import yaml
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.registers import encode_value
from edge.config import DeviceConfig, GatewaySettings, ModbusTcpBus, PointConfig

log = structlog.get_logger("drivers.simulator")

_TABLE_BY_FC = {1: "coil", 2: "discrete", 3: "holding", 4: "input"}
_TABLE_INDEX = {"coil": 0, "discrete": 1, "holding": 2, "input": 3}


@dataclass
class ReservoirModel:
    """The physical story the simulated sensors tell, as functions of time."""

    flood_limit: float = 123.5
    period_s: float = 120.0
    amplitude_m: float = 1.0
    # Time is compressed: a whole storm passes in half a period, so its total is fixed
    # rather than its intensity (60 mm: an orange rainstorm signal over 3 h in real time).
    storm_total_mm: float = 60.0
    lag_s: float = 10.0
    started: float = field(default_factory=time.monotonic)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def rain_rate(self, t: float) -> float:
        """mm/s: a storm during the first half of each period, sin² shaped."""
        phase = math.sin(2 * math.pi * t / self.period_s)
        # ∫ sin² over half a period is period/4, hence the factor.
        return self.storm_total_mm * 4 / self.period_s * max(0.0, phase) ** 2

    def rain_total(self, t: float) -> float:
        """mm since start: the closed-form integral of ``rain_rate``."""
        period = self.period_s
        cycles, rest = divmod(t, period)
        within = min(rest, period / 2)
        partial = within / 2 - period / (8 * math.pi) * math.sin(4 * math.pi * within / period)
        return (cycles + partial * 4 / period) * self.storm_total_mm

    def water_level(self, t: float) -> float:
        # Lowest as the storm begins, highest a quarter period after its peak; base +
        # amplitude overtops the flood-limit level by 0.4 amplitudes.
        base = self.flood_limit - 0.6 * self.amplitude_m
        return base + self.amplitude_m * 0.5 * (1 - math.cos(2 * math.pi * t / self.period_s))

    def value(self, point: PointConfig, t: float) -> float:
        q = point.quantity
        if q == "water_level":
            return self.water_level(t)
        if q == "rainfall_counter":
            return float(int(self.rain_total(t) / 0.5) % 65536)  # 0.5 mm per tip
        if q == "rainfall":
            return self.rain_rate(t) * 300  # a 5-minute sum at the current intensity
        if q == "seepage_pressure":
            # The piezometer sits 12 m below the flood limit and follows the reservoir
            # with three lags of delay: kPa of water above it.
            return max(0.0, 9.81 * (self.water_level(t - 3 * self.lag_s) - self.flood_limit + 12))
        if q == "piezometric_level":
            return self.water_level(t - 3 * self.lag_s) - 8.0
        if q in ("displacement", "settlement"):
            return 0.002 * t + 0.3 * math.sin(2 * math.pi * t / (self.period_s * 3))
        if q == "seepage_flow":
            return 1.2 + 0.3 * (self.water_level(t - self.lag_s) - self.flood_limit)
        if q == "temperature":
            return 15.0 + 3.0 * math.sin(2 * math.pi * t / (self.period_s * 5))
        if q == "battery_voltage":
            return 12.6 + 0.2 * math.sin(2 * math.pi * t / self.period_s)
        if q == "status":
            return float(int(t / 10) % 2)
        return 50.0 + 10.0 * math.sin(2 * math.pi * t / self.period_s)


ValueScript = Mapping[str, Sequence[tuple[float, float]]]


def load_value_script(path: Path) -> dict[str, list[tuple[float, float]]]:
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    script: dict[str, list[tuple[float, float]]] = {}
    for ref, steps in data.items():
        script[str(ref)] = sorted((float(t), float(v)) for t, v in steps)
    return script


def _scripted(steps: Sequence[tuple[float, float]], t: float) -> float | None:
    value = None
    for at, v in steps:
        if at <= t:
            value = v
    return value


class SimulatedDevice:
    """One Modbus slave whose registers are refreshed from the model on every read."""

    def __init__(self, device: DeviceConfig, model: ReservoirModel, script: ValueScript):
        self.device = device
        self.model = model
        self.script = script
        self.reads = 0

    def engineering_value(self, point: PointConfig, t: float) -> float:
        scripted = self.script.get(f"{self.device.id}/{point.id}")
        if scripted:
            value = _scripted(scripted, t)
            if value is not None:
                return value
        return self.model.value(point, t)

    def sim_device(self) -> SimDevice:
        sizes = [1, 1, 1, 1]
        for point in self.device.points:
            reg = point.register
            index = _TABLE_INDEX[reg.table]
            end = reg.address + reg.width
            # Bit tables are packed 16 to a register in pymodbus's non-shared layout.
            sizes[index] = max(sizes[index], (end + 15) // 16 if index < 2 else end)
        blocks = (
            [SimData(0, count=sizes[0], values=0, datatype=DataType.BITS)],
            [SimData(0, count=sizes[1], values=0, datatype=DataType.BITS)],
            [SimData(0, count=sizes[2], values=0, datatype=DataType.REGISTERS)],
            [SimData(0, count=sizes[3], values=0, datatype=DataType.REGISTERS)],
        )
        return SimDevice(self.device.unit, simdata=blocks, action=self._on_request)

    async def _on_request(self, function_code: int, start_address: int, address: int,
                          count: int, registers: list[int],
                          set_values: list[int] | list[bool] | None) -> ExcCodes | None:
        table = _TABLE_BY_FC.get(function_code)
        if table is None or set_values is not None:
            return None
        self.reads += 1
        t = self.model.elapsed()
        for point in self.device.points:
            reg = point.register
            if reg.table != table:
                continue
            value = self.engineering_value(point, t)
            if reg.table in ("coil", "discrete"):
                word, bit = divmod(reg.address, 16)
                i = word - start_address
                registers[i] = (registers[i] | (1 << bit)) if value else \
                    (registers[i] & ~(1 << bit))
                continue
            i = reg.address - start_address
            if reg.bit is not None:
                registers[i] = (registers[i] | (1 << reg.bit)) if value else \
                    (registers[i] & ~(1 << reg.bit))
                continue
            raw = (value - point.offset) / point.scale
            words = encode_value(raw, reg.value_type, reg.word_order, reg.byte_order)
            registers[i : i + len(words)] = words
        return None


async def serve(settings: GatewaySettings, model: ReservoirModel | None = None,
                script: ValueScript | None = None) -> None:
    """Serve every Modbus TCP device of the configuration until cancelled."""
    model = model or ReservoirModel(flood_limit=settings.site.levels.get("flood_limit", 123.5))
    servers: list[ModbusTcpServer] = []
    for bus in settings.buses:
        if not isinstance(bus, ModbusTcpBus):
            continue
        devices = [SimulatedDevice(d, model, script or {}) for d in settings.devices
                   if d.bus == bus.id]
        if not devices:
            continue
        server = ModbusTcpServer([d.sim_device() for d in devices],
                                 address=(bus.host, bus.port))
        servers.append(server)
        log.info("simulator_serving", bus=bus.id, host=bus.host, port=bus.port,
                 devices=[d.device.id for d in devices])
    if not servers:
        raise ValueError("the configuration has no Modbus TCP device to simulate")
    try:
        await asyncio.gather(*(s.serve_forever() for s in servers))
    finally:
        for server in servers:
            await server.shutdown()
