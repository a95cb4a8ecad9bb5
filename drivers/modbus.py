"""Modbus bus poller: one task per bus (RS-485 line or TCP endpoint), polling its devices.

Models a Modbus master on a multi-drop RS-485 line (RTU, e.g. a USB-RS485 adapter with
level loggers and vibrating-wire readers behind it) or on a Modbus TCP gateway: requests on
one bus go strictly one at a time, devices are served in order of their due time so each
keeps its interval, and buses never wait for each other because each has its own task.

Faults are contained per device: a timeout, a garbled answer or a lost link skips that
device's remaining requests this cycle (so a dead slave delays the others by at most one
timeout per attempt: ``retries + 1`` timeouts), an exception response marks only the
points of that request bad, a CRC error is noticed as soon as the frame is complete and
retried, and after ``offline_after`` failed polls the device is offline and re-tried
with exponential backoff. Only state changes are logged; counts go to the health figures.

A merged read that the device refuses with exception 2 (a register in its span is not
mapped) is split until every readable point is read, and the split is kept for that device.

The connection is a ``ModbusLink`` (drivers/modbus_link.py): buses on the same TCP
endpoint share one, and the RTU line timing lives there. On an I/O error (a USB adapter
unplugged) the port is closed and re-opened by its path with bounded exponential backoff,
so a renamed-back ``/dev/serial/by-id/...`` link resumes polling without a restart.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import structlog
from pydantic import Field

from drivers.blockdecode import BlockDecoder
from drivers.bus import (
    BusHealth,
    BusType,
    CoilWrite,
    SerialPortSettings,
    check_register_points,
)
from drivers.decode import DeviceConversions, failed_points
from drivers.devices import DeviceConfig
from drivers.modbus_endpoints import close_link, open_link
from drivers.modbus_link import RequestFailed
from drivers.modbus_rtu import (  # noqa: F401  (re-exported: this module's API)
    RTU_CHAR_BITS,
    check_rtu_reply,
    crc16_modbus,
    rtu_silence_s,
)
from drivers.readplan import ReadBlock, join_read, plan_reads, split_block
from vocab.checking import PathKey, Report
from vocab.configbase import StrictModel
from vocab.ids import Ident
from vocab.model import PollResult, Reading, now_ms
from vocab.waits import Wake

if TYPE_CHECKING:
    # pymodbus is imported when the first Modbus bus is built, not with this module:
    # the configuration needs this module's models on every site, pymodbus costs about
    # 13 MiB and 50 ms, and a site of serial instruments and GNSS never uses it.
    from pymodbus.pdu import ModbusPDU

log = structlog.get_logger("drivers.modbus")

# pymodbus logs every unanswered request and every failed connect at warning or error
# level. The poller reports those as state changes and counts them in health, so the
# library's lines would only repeat them once per poll while a device is down.
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


class ModbusTcpBus(StrictModel):
    id: Ident
    type: Literal["modbus_tcp"]
    host: str
    port: int = Field(default=502, ge=1, le=65535)
    timeout_s: float = Field(default=1.0, gt=0, le=60)
    retries: int = Field(default=0, ge=0, le=5)


class ModbusRtuBus(SerialPortSettings):
    id: Ident
    type: Literal["modbus_rtu"]
    timeout_s: float = Field(default=1.0, gt=0, le=60)
    retries: int = Field(default=0, ge=0, le=5)
    inter_request_delay_s: float = Field(default=0.0, ge=0, le=10)



FUNCTION_CODES = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}
# The pymodbus client's read of each table.
READ_METHODS = {"coil": "read_coils", "discrete": "read_discrete_inputs",
                "holding": "read_holding_registers", "input": "read_input_registers"}
# Exception 2: the request's span holds an address the device does not map.
ILLEGAL_DATA_ADDRESS = 2


class ModbusDriver:
    """The Modbus master of one bus (a ``FieldDriver``): requests strictly one at a time,
    on the link it shares with every other bus on the same endpoint."""

    listening: Sequence[str] = ()

    def __init__(self, bus: ModbusTcpBus | ModbusRtuBus, devices: list[DeviceConfig],
                 health: BusHealth) -> None:
        self.bus = bus
        self.plans = {d.id: plan_reads(d.points, d.coalesce, d.max_gap) for d in devices}
        self.conversions = {d.id: DeviceConversions(d) for d in devices}
        self.health = health
        self.link, self._user = open_link(bus, health, {d.unit for d in devices
                                                         if d.unit is not None})
        # Each planned block's decoder, by the block's identity (a split block's halves
        # get theirs when first read).
        self._decoders: dict[int, BlockDecoder] = {}

    # -- the bus task's hooks ----------------------------------------------------------

    @property
    def reopen_at(self) -> float | None:
        return self.link.reopen_at

    async def reopen(self) -> None:
        with contextlib.suppress(RequestFailed):
            await self.link.ensure_connected()

    async def listen(self, until: float, wake: Wake) -> None:
        # Modbus devices are asked, never listened to: the wait is all there is.
        await wake.sleep_until(until)

    def close(self) -> None:
        close_link(self.link, self.bus.id)

    def _decoder(self, block: ReadBlock) -> BlockDecoder:
        decoder = self._decoders.get(id(block))
        if decoder is None or decoder.block is not block:
            decoder = self._decoders[id(block)] = BlockDecoder(block)
        return decoder

    # -- requests -----------------------------------------------------------------------

    async def _read(self, device: DeviceConfig, block: ReadBlock) -> list[int] | list[bool]:
        attempts = self.bus.retries + 1
        for attempt in range(attempts):
            try:
                return await self._exchange(device, block)
            except RequestFailed as exc:
                if not exc.retryable or attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable: the last attempt raises")

    async def _exchange(self, device: DeviceConfig, block: ReadBlock) -> list[int] | list[bool]:
        read = getattr(self.link.client, READ_METHODS[block.table])
        response = await self.link.request(
            self._user, device.unit, FUNCTION_CODES[block.table],
            lambda: read(block.address, count=block.count, device_id=device.unit))
        bits = block.table in ("coil", "discrete")
        values: list[int] | list[bool] = response.bits if bits else response.registers
        # Bits come padded to whole bytes; registers must be exactly the count asked for
        # (the byte count is fixed at 2 x N), or this is not the answer to this request.
        if len(values) < block.count or (not bits and len(values) != block.count):
            kind = "short_response" if len(values) < block.count else "wrong_length"
            raise RequestFailed(f"{kind}: {len(values)} of {block.count}", device_dead=False)
        return values

    async def poll(self, device: DeviceConfig) -> PollResult:
        """Read every block of the device's plan.

        The device is alive while any of its requests is answered with data: a register
        it refuses (an exception answer) marks only that request's points bad, so one
        unmapped register never takes the device offline or into backoff.
        """
        poll = _DevicePoll(device.id, self._decoder)
        frames_before = self._user.frames_sent
        try:
            await self.link.ensure_connected()
        except RequestFailed as exc:
            poll.failed(exc)
        plan = self.plans[device.id]
        for block in list(plan):
            leaves = await self._read_or_split(device, block, poll)
            if len(leaves) > 1:
                self._remember_split(device, block, join_read(leaves))
        readings = self.conversions[device.id].apply(poll.readings)
        ok = poll.failure is None or poll.answered
        requests = self._user.frames_sent - frames_before
        return PollResult(self.bus.id, device.id, tuple(readings), requests, ok, poll.failure)

    async def _read_or_split(self, device: DeviceConfig, block: ReadBlock,
                             poll: _DevicePoll) -> list[tuple[ReadBlock, bool]]:
        """Read ``block`` into ``poll``; if the device refuses a merged read because a
        register in its span is not mapped (exception 2), read it in halves, halving
        again what is still refused. Returns the blocks it was finally read as, each
        with whether it was read."""
        if poll.dead:
            poll.skip(block)
            return [(block, False)]
        try:
            values = await self._read(device, block)
        except RequestFailed as exc:
            if exc.exception_code != ILLEGAL_DATA_ADDRESS or len(block.points) < 2:
                poll.failed(exc, block)
                return [(block, False)]
        else:
            poll.decoded(block, values)
            return [(block, True)]
        leaves: list[tuple[ReadBlock, bool]] = []
        for half in split_block(block):
            leaves.extend(await self._read_or_split(device, half, poll))
        return leaves

    def _remember_split(self, device: DeviceConfig, block: ReadBlock,
                        leaves: list[ReadBlock]) -> None:
        """From now on the device is read as ``leaves`` instead of ``block``; said once."""
        plan = self.plans[device.id]
        at = plan.index(block)
        plan[at : at + 1] = leaves
        log.warning("read_split", bus=self.bus.id, device=device.id, table=block.table,
                    address=block.address, count=block.count,
                    reason="exception_response: code 2",
                    reads=[f"{leaf.address}+{leaf.count}" for leaf in leaves])


    # -- relay modules --------------------------------------------------------------------

    async def write_coils(self, unit: int, address: int, values: Sequence[bool]) -> CoilWrite:
        """Switch coils of a relay module and read them back (FC05/FC15, then FC01).

        Common RS-485 relay boards take both write functions and answer FC01 with the
        state of their relays; a write is idempotent, so a retryable failure is retried
        like a read. Never raises for a failure: the result says what went wrong.
        """
        started = time.monotonic()
        wanted = tuple(bool(v) for v in values)

        def done(ok: bool, read_back: tuple[bool, ...] | None,
                 error: str | None) -> CoilWrite:
            self.health.count("coil_writes")
            if not ok:
                self.health.count("coil_write_failures")
            return CoilWrite(self.bus.id, unit, address, wanted, ok, read_back, error,
                             round(time.monotonic() - started, 4))

        if not wanted:
            return done(False, None, "nothing to write: no coil values given")
        try:
            await self.link.ensure_connected()
            if len(wanted) == 1:
                await self._retried(unit, 5, lambda: self.link.client.write_coil(
                    address, wanted[0], device_id=unit))
            else:
                await self._retried(unit, 15, lambda: self.link.client.write_coils(
                    address, list(wanted), device_id=unit))
            response = await self._retried(unit, 1, lambda: self.link.client.read_coils(
                address, count=len(wanted), device_id=unit))
        except RequestFailed as exc:
            return done(False, None, exc.reason)
        bits = tuple(bool(b) for b in response.bits[: len(wanted)])
        if len(bits) < len(wanted):
            return done(False, bits, f"short_response: {len(bits)} of {len(wanted)} coils")
        if bits != wanted:
            return done(False, bits, f"read_back_differs: wrote {_bits(wanted)}, "
                                     f"read {_bits(bits)}")
        return done(True, bits, None)

    async def _retried(self, unit: int, function_code: int,
                       call: Callable[[], Awaitable[ModbusPDU]]) -> ModbusPDU:
        attempts = self.bus.retries + 1
        for attempt in range(attempts):
            try:
                return await self.link.request(self._user, unit, function_code, call)
            except RequestFailed as exc:
                if not exc.retryable or attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable: the last attempt raises")


class _DevicePoll:
    """What one poll of a device has gathered so far, block by block."""

    def __init__(self, device_id: str, decoder: Callable[[ReadBlock], BlockDecoder]) -> None:
        self.device_id = device_id
        self._decoder = decoder
        self.readings: list[Reading] = []
        self.failure: str | None = None
        # Set by a failure that makes further requests to the device pointless
        # (a timeout, a lost link): its remaining blocks are skipped this cycle.
        self.dead = False
        # Some request was answered with data: the device is alive.
        self.answered = False

    def decoded(self, block: ReadBlock, values: list[int] | list[bool]) -> None:
        ts = now_ms()
        self.answered = True
        self.readings.extend(self._decoder(block).decode(self.device_id, values, ts))

    def failed(self, exc: RequestFailed, block: ReadBlock | None = None) -> None:
        self.failure = exc.reason
        self.dead = self.dead or exc.device_dead
        if block is not None:
            self.readings.extend(failed_points(self.device_id, block.points, now_ms(),
                                               exc.reason))

    def skip(self, block: ReadBlock) -> None:
        self.readings.extend(failed_points(self.device_id, block.points, now_ms(),
                                           self.failure or "skipped"))


def _bits(values: Sequence[bool]) -> str:
    return "".join("1" if v else "0" for v in values)


def check_device(bus: ModbusTcpBus | ModbusRtuBus, device: DeviceConfig, here: PathKey,
                 earlier: Sequence[DeviceConfig], report: Report) -> None:
    """Every point of a Modbus device is located by its register."""
    check_register_points(bus, device, here, report)


def make_driver(bus: Any, devices: list[DeviceConfig], health: BusHealth) -> ModbusDriver:
    return ModbusDriver(bus, devices, health)


TCP = BusType(ModbusTcpBus, check_device, make_driver)
RTU = BusType(ModbusRtuBus, check_device, make_driver)

