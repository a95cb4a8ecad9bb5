"""Real pymodbus servers for driver tests (TCP, and RTU over a pty line), with request
counting and fault switches."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from simulator.serialwire import SerialWire
from tests.support import free_port


@dataclass
class FieldDevice:
    """A slave with its four tables; ``silent`` makes it never answer, like a dead one."""

    unit: int
    holding: list[int] = field(default_factory=lambda: [0] * 200)
    input: list[int] = field(default_factory=lambda: [0] * 200)
    coils: list[int] = field(default_factory=lambda: [0] * 16)  # 16 bits per register
    discrete: list[int] = field(default_factory=lambda: [0] * 16)
    silent: bool = False
    exception: ExcCodes | None = None
    # Function codes the exception applies to (None: all of them).
    exception_on: frozenset[int] | None = None
    # On an RTU line: damage the reply's CRC, or send random bytes instead of it.
    corrupt: Literal["crc", "garbage"] | None = None
    # Processing time before answering (a VW reader measures on the read).
    delay_s: float = 0.0
    requests: int = 0
    # An RTU bus drops a silent device's replies on the wire instead of stalling it.
    drop_when_silent: bool = False

    async def action(self, fc: int, start: int, address: int, count: int,
                     registers: list[int], values: object) -> ExcCodes | None:
        self.requests += 1
        if self.silent and not self.drop_when_silent:
            await asyncio.sleep(3600)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.exception is not None and (self.exception_on is None
                                           or fc in self.exception_on):
            return self.exception
        source = {1: self.coils, 2: self.discrete, 3: self.holding, 4: self.input}[fc]
        registers[: len(source)] = source
        return None

    def sim_device(self) -> SimDevice:
        blocks = (
            [SimData(0, count=len(self.coils), values=0, datatype=DataType.BITS)],
            [SimData(0, count=len(self.discrete), values=0, datatype=DataType.BITS)],
            [SimData(0, count=len(self.holding), values=0, datatype=DataType.REGISTERS)],
            [SimData(0, count=len(self.input), values=0, datatype=DataType.REGISTERS)],
        )
        return SimDevice(self.unit, simdata=blocks, action=self.action)


class TcpFieldBus:
    """Serve some FieldDevices on a free loopback port; count requests per unit."""

    def __init__(self, devices: Iterable[FieldDevice]) -> None:
        self.devices = {d.unit: d for d in devices}
        self.port = free_port()
        self.pdus: list[int] = []
        self.server: ModbusTcpServer | None = None
        self.task: asyncio.Task[None] | None = None

    def _trace(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if not sending:
            self.pdus.append(pdu.dev_id)
        return pdu

    async def __aenter__(self) -> TcpFieldBus:
        self.server = ModbusTcpServer([d.sim_device() for d in self.devices.values()],
                                      address=("127.0.0.1", self.port),
                                      trace_pdu=self._trace, ignore_missing_devices=True)
        self.task = asyncio.create_task(self.server.serve_forever())
        for _ in range(100):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                break
            except OSError:
                await asyncio.sleep(0.02)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None and self.task is not None
        await self.server.shutdown()
        self.task.cancel()


class RtuFieldBus:
    """Serve FieldDevices as RTU slaves on a simulated RS-485 line at ``link``.

    The gateway opens ``link`` (a symlink to a pty, like a /dev/serial/by-id name); the
    pymodbus serial server sits at the other end of a SerialWire, which paces bytes at
    ``baudrate`` when asked to and records every frame with its times.
    """

    def __init__(self, devices: Iterable[FieldDevice], link: Path,
                 baudrate: int | None = None) -> None:
        self.devices = {d.unit: d for d in devices}
        for device in self.devices.values():
            device.drop_when_silent = True
        self.wire = SerialWire(link, baudrate=baudrate)
        self.pdus: list[int] = []
        self.server: ModbusSerialServer | None = None
        self._noise = random.Random(1)

    def _trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if not sending:
            self.pdus.append(pdu.dev_id)
        return pdu

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        if not sending or not data:
            return data
        device = self.devices.get(data[0])
        if device is None:
            return data
        if device.silent:
            return b""
        if device.corrupt == "crc":
            return data[:-1] + bytes([data[-1] ^ 0xFF])
        if device.corrupt == "garbage":
            # Never starting with a unit id of the bus, so nothing can pass for a frame.
            return bytes([0xFF]) + bytes(self._noise.randrange(256) for _ in data[1:])
        return data

    async def __aenter__(self) -> RtuFieldBus:
        self.wire.open()
        self.server = ModbusSerialServer(
            [d.sim_device() for d in self.devices.values()], framer=FramerType.RTU,
            port=self.wire.device_path, baudrate=self.wire.baudrate or 9600,
            ignore_missing_devices=True, trace_pdu=self._trace_pdu,
            trace_packet=self._trace_packet)
        await self.server.serve_forever(background=True)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        await self.server.shutdown()
        self.wire.close()
