"""A simulated RS-485 relay module: the board a reservoir's siren or beacon hangs on.

The common 4-, 8- and 16-channel Modbus RTU relay boards (Waveshare "Modbus RTU Relay",
Eletechsup R4D3B16 and their many clones) map each relay to a coil from address 0: FC05
switches one relay, FC15 several, FC01 reads back their state. This one does the same
behind a pymodbus server (``edge simulate`` puts it on the bus a siren names, beside the
sensors), records every switch with its time, and can fail as a real one does:
``silent`` (unpowered, or its address set wrong: no answer at all) and ``stuck`` (a
welded contact or a dead driver stage: the write is acknowledged but the relay keeps its
state, which only the read-back reveals).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import structlog
from pymodbus.constants import ExcCodes
from pymodbus.simulator import DataType, SimData, SimDevice

log = structlog.get_logger("simulator.relay")

BITS_PER_REGISTER = 16  # pymodbus's bit tables are packed 16 to a register


@dataclass(frozen=True, slots=True)
class RelaySwitch:
    at: float  # time.monotonic() when the relay changed
    coil: int
    on: bool


@dataclass
class RelayModule:
    """One relay board at Modbus address ``unit`` with ``channels`` relays."""

    unit: int
    channels: int = 16
    name: str = ""
    silent: bool = False
    stuck: bool = False
    coils: list[bool] = field(default_factory=list)
    switches: list[RelaySwitch] = field(default_factory=list)
    requests: int = 0

    def __post_init__(self) -> None:
        if not self.coils:
            self.coils = [False] * self.channels

    def sim_device(self) -> SimDevice:
        registers = (self.channels + BITS_PER_REGISTER - 1) // BITS_PER_REGISTER
        blocks = (
            [SimData(0, count=registers, values=0, datatype=DataType.BITS)],
            [SimData(0, count=1, values=0, datatype=DataType.BITS)],
            [SimData(0, count=1, values=0, datatype=DataType.REGISTERS)],
            [SimData(0, count=1, values=0, datatype=DataType.REGISTERS)],
        )
        return SimDevice(self.unit, simdata=blocks, action=self.action)

    async def action(self, fc: int, start: int, address: int, count: int,
                     registers: list[int], values: object) -> ExcCodes | None:
        self.requests += 1
        if self.silent:
            # What a Modbus TCP gateway says for a slave that does not answer; on an
            # RS-485 line the simulation drops this reply, so the master times out.
            return ExcCodes.GATEWAY_NO_RESPONSE
        if fc not in (1, 5, 15):
            return ExcCodes.ILLEGAL_FUNCTION
        if fc in (5, 15) and values is not None:
            self._write(address, [bool(v) for v in values] if isinstance(values, list)
                        else [bool(values)])
        # The board answers from its relays, not from what was last written to it.
        for index, on in enumerate(self.coils):
            word, bit = divmod(index, BITS_PER_REGISTER)
            registers[word] = registers[word] | (1 << bit) if on else \
                registers[word] & ~(1 << bit)
        return None

    def _write(self, address: int, values: list[bool]) -> None:
        if self.stuck:
            return
        for offset, on in enumerate(values):
            coil = address + offset
            if coil >= self.channels:
                continue
            if self.coils[coil] != on:
                self.coils[coil] = on
                self.switches.append(RelaySwitch(time.monotonic(), coil, on))
                log.info("simulator_relay_switched", unit=self.unit, relay=self.name,
                         coil=coil, on=on)

