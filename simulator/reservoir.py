"""A simulated reservoir: the site's field devices, served where the gateway looks for them.

``edge simulate -c site.yaml`` serves

* every **Modbus TCP** device on the host and port its bus names, as a Modbus TCP-to-RTU
  gateway with its slaves behind it would: a request for a unit id no device has gets
  exception 0x0B, "gateway target device failed to respond" (the Modbus application
  protocol specification's answer for a slave that is not there);
* every **Modbus RTU** bus over pseudo-terminals: a symlink at the bus's ``port`` leads to
  a simulated RS-485 line (simulator/serialwire.py, paced at the bus's baud rate, slaves
  answering after the 3.5-character silence) with a pymodbus serial server answering for
  every device's unit. A request for any other unit id gets no answer at all, as on a real
  line where no slave has that address: the master times out;
* every **NMEA GNSS** receiver over a pseudo-terminal as well, printing GGA and RMC once a
  second with valid checksums: RTK fixed around the configured baseline, creeping slowly
  downstream and settling, with millimetre noise.

Values are plausible and change over time: a rain storm passes every ``period_s`` seconds,
the tipping-bucket counter counts its tips, the reservoir level rises behind the rain and
crosses the flood-limit level, the seepage pressure follows the level with a lag, and GNSS
displacement creeps slowly. Serial text instruments (``serial_line``) are not simulated:
what they print is specific to each model.

Points can be pinned to a script of values (``--values FILE``: a mapping of
``device/point`` to ``[[t_s, value], ...]``, each value held from its time on), which is
how the end-to-end tests drive a known series through the whole gateway. A fault plan
(``--faults FILE``/``--fault``, simulator/faultplan.py) makes devices fail on schedule.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import structlog
import yaml
from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.devices import DeviceConfig, PointConfig
from drivers.geodesy import WGS84_A_M, WGS84_E2
from drivers.gnss import NmeaGnssBus
from drivers.modbus import ModbusRtuBus, ModbusTcpBus
from drivers.nmea import GnssBaseline, nmea_checksum
from drivers.registers import encode_value
from edge.config import GatewaySettings
from simulator.faultplan import FaultPlan
from simulator.notify_equipment import ModemSim, ScheduledReply, relays_by_bus
from simulator.relay import RelayModule
from simulator.serialwire import SerialWire

log = structlog.get_logger("simulator.reservoir")

_TABLE_BY_FC = {1: "coil", 2: "discrete", 3: "holding", 4: "input"}
_TABLE_INDEX = {"coil": 0, "discrete": 1, "holding": 2, "input": 3}
Clock = Callable[[], float]


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

    def crest_displacement_mm(self, t: float) -> tuple[float, float]:
        """(downstream, settlement) of a crest GNSS station in mm: creep plus a seasonal swing."""
        swing = 0.5 * math.sin(2 * math.pi * t / (self.period_s * 3))
        return 0.02 * t + swing, 0.005 * t

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

    def __init__(self, device: DeviceConfig, model: ReservoirModel, script: ValueScript,
                 plan: FaultPlan | None = None):
        self.device = device
        self.model = model
        self.script = script
        self.plan = plan or FaultPlan()
        self.reads = 0
        self._stuck: dict[str, float] = {}

    def engineering_value(self, point: PointConfig, t: float) -> float:
        ref = f"{self.device.id}/{point.id}"
        stuck = self.plan.active("stuck", ref, t)
        if stuck is not None and ref in self._stuck:
            return self._stuck[ref]
        value = self.model.value(point, t)
        scripted = self.script.get(ref)
        if scripted:
            pinned = _scripted(scripted, t)
            if pinned is not None:
                value = pinned
        if stuck is not None:
            self._stuck[ref] = value
        else:
            self._stuck.pop(ref, None)
        spike = self.plan.active("spike", ref, t)
        return value + spike.offset if spike is not None else value

    def sim_device(self) -> SimDevice:
        sizes = [1, 1, 1, 1]
        for point in self.device.points:
            reg = point.register
            if reg is None:
                continue
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
        failing = self.plan.active("exception", self.device.id, t)
        if failing is not None:
            return ExcCodes(failing.code)
        for point in self.device.points:
            reg = point.register
            if reg is None or reg.table != table:
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


def response_tamper(devices: Sequence[SimulatedDevice], plan: FaultPlan, clock: Clock,
                    rtu: bool) -> Callable[[bool, bytes], bytes]:
    """A server packet hook that silences or damages the replies of faulty devices."""
    by_unit = {d.device.unit: d.device.id for d in devices}
    noise = random.Random(0x5EED)

    def trace(sending: bool, data: bytes) -> bytes:
        # The unit id is the first byte of an RTU frame, the seventh of a TCP one.
        unit_at = 0 if rtu else 6
        if not sending or len(data) <= unit_at:
            return data
        device_id = by_unit.get(data[unit_at])
        if device_id is None:
            return data
        t = clock()
        if plan.active("silent", device_id, t):
            return b""
        if rtu and plan.active("crc_error", device_id, t):
            return data[:-1] + bytes([data[-1] ^ 0x5A])
        if rtu and plan.active("garbage", device_id, t):
            return bytes(noise.randrange(256) for _ in data)
        return data

    return trace


class _AbsentUnitRequest(ModbusPDU):
    """A request a Modbus TCP gateway forwarded to a slave that never answered."""

    def __init__(self, request: ModbusPDU) -> None:
        super().__init__(dev_id=request.dev_id, transaction_id=request.transaction_id)
        self.function_code = request.function_code

    async def datastore_update(self, context: object, device_id: int) -> ModbusPDU:
        return ExceptionResponse(self.function_code, ExcCodes.GATEWAY_NO_RESPONSE)


def absent_units(devices: Sequence[SimulatedDevice], rtu: bool,
                 relays: Sequence[RelayModule] = ()) -> Callable[[bool, ModbusPDU],
                                                               ModbusPDU | None]:
    """A server PDU hook answering requests for unit ids no device has, as real buses do.

    Without it pymodbus's simulator answers them with exception 4 (device failure), which
    no real bus does: an RS-485 line has nobody to answer (no reply: the master times out)
    and a TCP-to-RTU gateway answers 0x0B when its slave does not.
    """
    units = {d.device.unit for d in devices} | {r.unit for r in relays}

    def trace(sending: bool, pdu: ModbusPDU) -> ModbusPDU | None:
        if sending or pdu.dev_id in units:
            return pdu
        # pymodbus handles no request its hook returned None for.
        return None if rtu else _AbsentUnitRequest(pdu)

    return trace


class _TcpBusSim:
    """A Modbus TCP endpoint; a ``disconnect`` fault shuts its server down for a while."""

    def __init__(self, bus: ModbusTcpBus, devices: list[SimulatedDevice], plan: FaultPlan,
                 clock: Clock, relays: Sequence[RelayModule] = ()) -> None:
        self.bus, self.devices, self.plan, self.clock = bus, devices, plan, clock
        self.relays = relays

    def _server(self) -> ModbusTcpServer:
        return ModbusTcpServer([d.sim_device() for d in self.devices]
                               + [r.sim_device() for r in self.relays],
                               address=(self.bus.host, self.bus.port),
                               trace_packet=response_tamper(self.devices, self.plan,
                                                            self.clock, rtu=False),
                               trace_pdu=absent_units(self.devices, False, self.relays))

    async def run(self) -> None:
        server: ModbusTcpServer | None = None
        log.info("simulator_serving", bus=self.bus.id, host=self.bus.host, port=self.bus.port,
                 devices=[d.device.id for d in self.devices],
                 relays=[r.unit for r in self.relays])
        try:
            while True:
                down = self.plan.active("disconnect", self.bus.id, self.clock()) is not None
                if down and server is not None:
                    await server.shutdown()
                    server = None
                elif not down and server is None:
                    server = self._server()
                    await server.serve_forever(background=True)
                await asyncio.sleep(0.1)
        finally:
            if server is not None:
                await server.shutdown()


def _check_link_path(path: str) -> None:
    if os.path.lexists(path) and not os.path.islink(path):
        raise ValueError(f"{path} exists and is not a symlink: the simulator will not "
                         "replace a real device (use a path such as /tmp/sim/ttyRS485)")


class _RtuBusSim:
    """An RS-485 line over pseudo-terminals; ``disconnect`` unplugs the adapter."""

    def __init__(self, bus: ModbusRtuBus, devices: list[SimulatedDevice], plan: FaultPlan,
                 clock: Clock, relays: Sequence[RelayModule] = ()) -> None:
        _check_link_path(bus.port)
        self.bus, self.devices, self.plan, self.clock = bus, devices, plan, clock
        self.relays = relays
        self.wire = SerialWire(bus.port, baudrate=bus.baudrate, keep_frames=16)

    async def run(self) -> None:
        self.wire.open()
        server = ModbusSerialServer(
            [d.sim_device() for d in self.devices] + [r.sim_device() for r in self.relays],
            framer=FramerType.RTU,
            port=self.wire.device_path, baudrate=self.bus.baudrate,
            trace_packet=response_tamper(self.devices, self.plan, self.clock, rtu=True),
            trace_pdu=absent_units(self.devices, True, self.relays))
        log.info("simulator_serving", bus=self.bus.id, port=self.bus.port,
                 baudrate=self.bus.baudrate, devices=[d.device.id for d in self.devices],
                 relays=[r.unit for r in self.relays])
        try:
            await server.serve_forever(background=True)
            while True:
                down = self.plan.active("disconnect", self.bus.id, self.clock()) is not None
                if down and self.wire.plugged:
                    self.wire.unplug()
                elif not down and not self.wire.plugged:
                    self.wire.plug()
                await asyncio.sleep(0.1)
        finally:
            await server.shutdown()
            self.wire.close()


def enu_to_position(baseline: GnssBaseline, east_mm: float, north_mm: float,
              up_mm: float) -> tuple[float, float, float]:
    """Latitude, longitude and ellipsoidal height of a small ENU offset from the baseline.

    Uses the meridian and prime-vertical radii at the baseline: for offsets of metres the
    error is far below a micrometre, which the tests of drivers.nmea confirm in reverse.
    """
    lat = math.radians(baseline.lat_deg)
    w = 1 - WGS84_E2 * math.sin(lat) ** 2
    meridian = WGS84_A_M * (1 - WGS84_E2) / w ** 1.5
    prime_vertical = WGS84_A_M / math.sqrt(w)
    dlat = math.degrees(north_mm / 1000 / (meridian + baseline.height_m))
    dlon = math.degrees(east_mm / 1000 / ((prime_vertical + baseline.height_m) * math.cos(lat)))
    return baseline.lat_deg + dlat, baseline.lon_deg + dlon, baseline.height_m + up_mm / 1000


def _angle(value: float, degree_digits: int) -> str:
    """ddmm.mmmmmmmm (or dddmm...) with 8 decimals of arc-minutes, as RTK receivers print."""
    degrees = int(abs(value))
    minutes = round((abs(value) - degrees) * 60, 8)
    if minutes >= 60:
        degrees, minutes = degrees + 1, minutes - 60
    return f"{degrees:0{degree_digits}d}{minutes:011.8f}"


def _sentence(body: str) -> bytes:
    return f"${body}*{nmea_checksum(body):02X}\r\n".encode("ascii")


def gga_sentence(utc: datetime, lat: float, lon: float, height_m: float, quality: int = 4,
                 satellites: int = 18, hdop: float = 0.7, geoid_separation_m: float = -5.0,
                 talker: str = "GN") -> bytes:
    """One GGA sentence with its checksum; altitude is height minus geoid separation."""
    rtk = quality in (4, 5)
    body = ",".join([
        f"{talker}GGA", utc.strftime("%H%M%S.") + f"{utc.microsecond // 10000:02d}",
        _angle(lat, 2), "N" if lat >= 0 else "S", _angle(lon, 3), "E" if lon >= 0 else "W",
        str(quality), f"{satellites:02d}", f"{hdop:.1f}",
        f"{height_m - geoid_separation_m:.4f}", "M", f"{geoid_separation_m:.3f}", "M",
        "1.0" if rtk else "", "0001" if rtk else "",
    ])
    return _sentence(body)


def rmc_sentence(utc: datetime, lat: float, lon: float, quality: int = 4,
                 talker: str = "GN") -> bytes:
    mode = {4: "R", 5: "F"}.get(quality, "A" if quality else "N")
    body = ",".join([
        f"{talker}RMC", utc.strftime("%H%M%S.") + f"{utc.microsecond // 10000:02d}",
        "A" if quality else "V", _angle(lat, 2), "N" if lat >= 0 else "S", _angle(lon, 3),
        "E" if lon >= 0 else "W", "0.00", "0.0", utc.strftime("%d%m%y"), "", "", mode,
    ])
    return _sentence(body)


def damaged(sentence: bytes) -> bytes:
    """The sentence with its last digit changed and the old checksum: line noise."""
    text = bytearray(sentence)
    star = text.index(b"*")
    for i in range(star - 1, 0, -1):
        if chr(text[i]).isdigit():
            text[i] = ord(str((int(chr(text[i])) + 1) % 10))
            break
    return bytes(text)


class NmeaReceiverSim:
    """An RTK GNSS receiver printing GGA + RMC every ``epoch_s`` on a simulated port."""

    def __init__(self, bus: NmeaGnssBus, device: DeviceConfig, model: ReservoirModel,
                 plan: FaultPlan, epoch_s: float = 1.0, noise_mm: float = 2.0) -> None:
        if device.baseline is None:
            raise ValueError(f"GNSS device {device.id} has no baseline")
        _check_link_path(bus.port)
        self.bus, self.device, self.model, self.plan = bus, device, model, plan
        self.baseline = device.baseline
        self.epoch_s = epoch_s
        self.noise_mm = noise_mm
        self.random = random.Random(device.id)
        self.wire = SerialWire(bus.port, baudrate=bus.baudrate, keep_frames=16)

    def offset_mm(self, t: float, quality: int) -> tuple[float, float, float]:
        """East, north, up of the antenna at ``t``, with RTK noise (ten times for float)."""
        downstream, settlement = self.model.crest_displacement_mm(t)
        azimuth = math.radians(self.baseline.downstream_azimuth_deg or 0.0)
        sigma = self.noise_mm * (1 if quality == 4 else 10)
        east = downstream * math.sin(azimuth) + self.random.gauss(0, sigma)
        north = downstream * math.cos(azimuth) + self.random.gauss(0, sigma)
        up = -settlement + self.random.gauss(0, 2 * sigma)
        return east, north, up

    def epoch(self, t: float, utc: datetime) -> bytes:
        """What the receiver prints at ``t`` (empty when a fault silences it)."""
        if self.plan.active("silent", self.device.id, t):
            return b""
        if self.plan.active("garbage", self.device.id, t):
            return bytes(self.random.randrange(256) for _ in range(80)) + b"\r\n"
        quality = 5 if self.plan.active("rtk_float", self.device.id, t) else 4
        lat, lon, height = enu_to_position(self.baseline, *self.offset_mm(t, quality))
        sentences = [gga_sentence(utc, lat, lon, height, quality),
                     rmc_sentence(utc, lat, lon, quality)]
        if self.plan.active("crc_error", self.device.id, t):
            sentences = [damaged(s) for s in sentences]
        return b"".join(sentences)

    async def run(self) -> None:
        self.wire.open()
        fd = os.open(self.wire.device_path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        log.info("simulator_serving", bus=self.bus.id, port=self.bus.port,
                 devices=[self.device.id])
        try:
            next_epoch = time.monotonic()
            while True:
                t = self.model.elapsed()
                down = self.plan.active("disconnect", self.bus.id, t) is not None
                if down and self.wire.plugged:
                    self.wire.unplug()
                elif not down and not self.wire.plugged:
                    self.wire.plug()
                data = self.epoch(t, datetime.now(UTC))
                if data:
                    with contextlib.suppress(BlockingIOError):
                        os.write(fd, data)
                next_epoch += self.epoch_s
                await asyncio.sleep(max(0.0, next_epoch - time.monotonic()))
        finally:
            os.close(fd)
            self.wire.close()


async def _log_faults(plan: FaultPlan, clock: Clock) -> None:
    active: set[int] = set()
    while True:
        t = clock()
        for index, fault in enumerate(plan.faults):
            if fault.active(t) and index not in active:
                active.add(index)
                log.warning("fault_started", kind=fault.kind, target=fault.target,
                            at_s=fault.at_s, for_s=fault.for_s)
            elif not fault.active(t) and index in active:
                active.discard(index)
                log.info("fault_ended", kind=fault.kind, target=fault.target)
        await asyncio.sleep(0.1)


async def serve(settings: GatewaySettings, model: ReservoirModel | None = None,
                script: ValueScript | None = None, plan: FaultPlan | None = None,
                gnss_epoch_s: float = 1.0, *, modem: bool = True,
                replies: Sequence[ScheduledReply] = (), sms_log: Path | None = None) -> None:
    """Serve every Modbus and GNSS device of the configuration until cancelled, with the
    relay boards of its sirens and (unless ``modem`` is False) its SMS modem.

    ``gnss_epoch_s`` is the receivers' output period (1 Hz like real RTK receivers; tests
    use faster ones).
    """
    model = model or ReservoirModel(flood_limit=settings.site.levels.get("flood_limit", 123.5))
    plan = plan or FaultPlan()
    clock = model.elapsed
    relays = relays_by_bus(settings)
    runners: list[_TcpBusSim | _RtuBusSim | NmeaReceiverSim | ModemSim] = []
    for bus in settings.buses:
        configs = [d for d in settings.devices if d.bus == bus.id]
        boards = relays.get(bus.id, [])
        if not configs and not boards:
            continue
        devices = [SimulatedDevice(d, model, script or {}, plan) for d in configs]
        if isinstance(bus, ModbusTcpBus):
            runners.append(_TcpBusSim(bus, devices, plan, clock, boards))
        elif isinstance(bus, ModbusRtuBus):
            runners.append(_RtuBusSim(bus, devices, plan, clock, boards))
        elif isinstance(bus, NmeaGnssBus):
            runners.append(NmeaReceiverSim(bus, configs[0], model, plan, gnss_epoch_s))
        else:
            log.info("simulator_skipping", bus=bus.id, type=bus.type,
                     reason="serial text instruments are not simulated")
    notify = settings.notify
    if modem and notify is not None and notify.modem is not None:
        runners.append(ModemSim(notify.modem.port, replies, sms_log))
    if not runners:
        raise ValueError("the configuration has no Modbus or GNSS device to simulate")
    watcher = asyncio.create_task(_log_faults(plan, clock))
    try:
        await asyncio.gather(*(r.run() for r in runners))
    finally:
        watcher.cancel()
