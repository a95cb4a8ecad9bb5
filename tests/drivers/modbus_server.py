"""A real pymodbus TCP server for driver tests, with request counting and fault switches."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field

from pymodbus.constants import ExcCodes
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

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
    requests: int = 0

    async def action(self, fc: int, start: int, address: int, count: int,
                     registers: list[int], values: object) -> ExcCodes | None:
        self.requests += 1
        if self.silent:
            await asyncio.sleep(3600)
        if self.exception is not None:
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
