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

RTU specifics: the line is kept silent for 3.5 character times (1.75 ms above 19200 baud,
as the Modbus serial-line specification fixes it) after every frame before the next
request, plus ``inter_request_delay_s`` for slow slaves. On an I/O error (a USB adapter
unplugged) the port is closed and re-opened by its path with bounded exponential backoff,
so a renamed-back ``/dev/serial/by-id/...`` link resumes polling without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import structlog
from pydantic import Field

from drivers.bus import (
    BusHealth,
    BusType,
    CoilWrite,
    SerialPortSettings,
    check_register_points,
    wait_until,
)
from drivers.bustask import LinkBackoff
from drivers.decode import DeviceConversions, decode_point, failed_points
from drivers.devices import DeviceConfig
from drivers.readplan import ReadBlock, join_read, plan_reads, split_block
from vocab.checking import PathKey, Report
from vocab.configbase import StrictModel
from vocab.ids import Ident
from vocab.model import PollResult, Reading, now_ms

if TYPE_CHECKING:
    # pymodbus is imported when the first Modbus bus is built, not with this module:
    # the configuration needs this module's models on every site, pymodbus costs about
    # 13 MiB and 50 ms, and a site of serial instruments and GNSS never uses it.
    from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
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



RTU_CHAR_BITS = 11  # start + 8 data + parity or second stop + stop, as the spec counts
FUNCTION_CODES = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}
# Write single coil, single register, multiple coils, multiple registers.
WRITE_FUNCTION_CODES = frozenset({5, 6, 15, 16})
# Exception 2: the request's span holds an address the device does not map.
ILLEGAL_DATA_ADDRESS = 2
# Slack on top of the client's own timeout before the poller stops waiting itself.
TIMEOUT_SLACK_S = 0.25


def rtu_char_time(baudrate: int) -> float:
    return RTU_CHAR_BITS / baudrate


def rtu_silence_s(baudrate: int) -> float:
    """The 3.5-character inter-frame silence; fixed at 1.75 ms above 19200 baud."""
    return 0.00175 if baudrate > 19200 else 3.5 * rtu_char_time(baudrate)


def crc16_modbus(data: bytes) -> bytes:
    """CRC-16/MODBUS of a frame body, in wire order (low byte first)."""
    from pymodbus.framer import FramerRTU

    return FramerRTU.compute_CRC(data).to_bytes(2, "big")


def check_rtu_reply(data: bytes, unit: int, function_code: int) -> str | None:
    """'crc_error' when ``data`` starts with a complete reply of ``unit`` whose CRC fails.

    None while the frame is incomplete, valid, or not recognisably ours (garbage before a
    frame is hunted through by the client; if no frame ever comes it is a timeout).
    """
    if len(data) < 3 or data[0] != unit:
        return None
    if data[1] == function_code:
        # Writes are answered with an echo of fixed length (address and value or count);
        # reads carry their byte count.
        length = 8 if function_code in WRITE_FUNCTION_CODES else 3 + data[2] + 2
    elif data[1] == function_code | 0x80:
        length = 5
    else:
        return None
    if len(data) < length:
        return None
    return None if crc16_modbus(data[: length - 2]) == data[length - 2 : length] \
        else "crc_error"


class _RequestFailed(Exception):
    """A request got no usable answer.

    ``device_dead``: skip the device's remaining requests this cycle; ``retryable``: the
    same request may succeed if sent again (line noise, a missed frame).
    """

    def __init__(self, reason: str, device_dead: bool, retryable: bool = False,
                 exception_code: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.device_dead = device_dead
        self.retryable = retryable
        # The Modbus exception code when the device answered with one.
        self.exception_code = exception_code


@dataclass
class _Pending:
    """The request on the wire: what answer is expected and what has arrived so far."""

    unit: int
    function_code: int
    abort: asyncio.Future[str]
    rx_bytes: int = 0


Tracer = Callable[[bool, bytes], bytes]


def make_client(bus: ModbusTcpBus | ModbusRtuBus, trace_packet: Tracer | None = None,
                trace_connect: Callable[[bool], None] | None = None,
                ) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
    from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
    from pymodbus.framer import FramerType

    # reconnect_delay=0: the poller owns reconnection and its backoff, so a dead link is
    # retried on the bus schedule instead of by a hidden background loop. retries=0: the
    # poller retries itself, so a CRC error can be retried at once instead of after a
    # full timeout.
    if isinstance(bus, ModbusTcpBus):
        return AsyncModbusTcpClient(bus.host, port=bus.port, timeout=bus.timeout_s,
                                    retries=0, reconnect_delay=0, name=bus.id,
                                    trace_packet=trace_packet, trace_connect=trace_connect)
    return AsyncModbusSerialClient(
        bus.port, framer=FramerType.RTU, baudrate=bus.baudrate, bytesize=bus.bytesize,
        parity=bus.parity, stopbits=bus.stopbits, timeout=bus.timeout_s,
        retries=0, reconnect_delay=0, name=bus.id,
        trace_packet=trace_packet, trace_connect=trace_connect,
    )


class ModbusDriver:
    """The Modbus master of one bus (a ``FieldDriver``): requests strictly one at a time."""

    listening: Sequence[str] = ()

    def __init__(self, bus: ModbusTcpBus | ModbusRtuBus, devices: list[DeviceConfig],
                 health: BusHealth) -> None:
        self.bus = bus
        self.plans = {d.id: plan_reads(d.points, d.coalesce, d.max_gap) for d in devices}
        self.conversions = {d.id: DeviceConversions(d) for d in devices}
        self.health = health
        self._rtu = isinstance(bus, ModbusRtuBus)
        self._char_s = rtu_char_time(bus.baudrate) if isinstance(bus, ModbusRtuBus) else 0.0
        self._silence_s = rtu_silence_s(bus.baudrate) if isinstance(bus, ModbusRtuBus) else 0.0
        self._request_gap_s = bus.inter_request_delay_s if isinstance(bus, ModbusRtuBus) \
            else 0.0
        self._quiet_at = 0.0
        self._frames_sent = 0
        self._rx_seen = b""
        self._pending: _Pending | None = None
        self._link = LinkBackoff()
        self._client = make_client(bus, self._on_packet, self._on_connect)

    # -- the bus task's hooks ----------------------------------------------------------

    @property
    def reopen_at(self) -> float | None:
        return self._link.retry_at if self._link.failing and not self._client.connected \
            else None

    async def reopen(self) -> None:
        with contextlib.suppress(_RequestFailed):
            await self._ensure_connected()

    async def listen(self, until: float, wake: asyncio.Event) -> None:
        # Modbus devices are asked, never listened to: the wait is all there is.
        await wait_until(until, wake)

    def close(self) -> None:
        self._client.close()

    # -- the link -----------------------------------------------------------------------

    async def _ensure_connected(self) -> None:
        if self._client.connected:
            return
        if self._link.failing and not self._link.may_try():
            raise _RequestFailed(self._link.reason or "connect_failed", device_dead=True)
        reason = self._port_missing()
        if reason is None:
            try:
                ok = await asyncio.wait_for(self._client.connect(), self.bus.timeout_s + 1)
            except Exception as exc:  # pyserial also raises termios.error, not an OSError
                ok, reason = False, f"connect_failed: {exc or type(exc).__name__}"
            else:
                reason = None if ok else "connect_failed"
        if reason is not None:
            self._client.close()
            if not self._link.failing or self.health.connected:
                log.warning("bus_unavailable", bus=self.bus.id, reason=reason)
            self._link.failed(reason)
            self._set_bus_connected(False)
            raise _RequestFailed(reason, device_dead=True)
        if self._link.failing:
            # The bus task polls the devices the outage took down at once.
            self.health.reconnects += 1
        self._link.succeeded()
        self._set_bus_connected(True)

    def _port_missing(self) -> str | None:
        if not isinstance(self.bus, ModbusRtuBus):
            return None
        if not os.path.exists(self.bus.port):
            return f"connect_failed: {self.bus.port} not found"
        if not os.access(self.bus.port, os.R_OK | os.W_OK):
            return f"connect_failed: no read/write permission on {self.bus.port}"
        return None

    def _link_down(self, reason: str) -> None:
        self._client.close()
        self._link.lost(reason)
        self._set_bus_connected(False, reason)

    def _set_bus_connected(self, connected: bool, reason: str | None = None) -> None:
        if connected != self.health.connected:
            self.health.connected = connected
            if connected:
                log.info("bus_connected", bus=self.bus.id, reconnects=self.health.reconnects)
            else:
                log.warning("bus_disconnected", bus=self.bus.id, reason=reason)

    def _on_connect(self, connected: bool) -> None:
        if connected:
            return
        # The transport saw the port or socket fail (a USB adapter unplugged, the peer
        # closed): the request in flight will never be answered.
        pending = self._pending
        if pending is not None and not pending.abort.done():
            pending.abort.set_result("io_error: link lost")
        self._link.lost("io_error: link lost")
        self._set_bus_connected(False, "io_error: link lost")

    def _on_packet(self, sending: bool, data: bytes) -> bytes:
        now = time.monotonic()
        if sending:
            self._frames_sent += 1
            self.health.bytes_sent += len(data)
            self._rx_seen = b""
            # If nothing answers, the line is free once our frame is out and has been
            # followed by the silence.
            self._quiet_at = now + len(data) * self._char_s + self._silence_s
            return data
        # The client hands over its whole receive buffer: count only what is new.
        new = len(data) - len(self._rx_seen) if data.startswith(self._rx_seen) else len(data)
        self._rx_seen = data
        self.health.bytes_received += new
        self._quiet_at = now + self._silence_s
        pending = self._pending
        if pending is not None:
            pending.rx_bytes += new
            if self._rtu and not pending.abort.done():
                verdict = check_rtu_reply(data, pending.unit, pending.function_code)
                if verdict is not None:
                    pending.abort.set_result(verdict)
        return data

    # -- requests -----------------------------------------------------------------------

    async def _wait_for_quiet_line(self) -> None:
        delay = self._quiet_at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    async def _read(self, device: DeviceConfig, block: ReadBlock) -> list[int] | list[bool]:
        attempts = self.bus.retries + 1
        for attempt in range(attempts):
            try:
                return await self._exchange(device, block)
            except _RequestFailed as exc:
                if not exc.retryable or attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable: the last attempt raises")

    async def _exchange(self, device: DeviceConfig, block: ReadBlock) -> list[int] | list[bool]:
        call = {
            "coil": self._client.read_coils,
            "discrete": self._client.read_discrete_inputs,
            "holding": self._client.read_holding_registers,
            "input": self._client.read_input_registers,
        }[block.table]
        response = await self._request(
            device.unit, FUNCTION_CODES[block.table],
            lambda: call(block.address, count=block.count, device_id=device.unit))
        bits = block.table in ("coil", "discrete")
        values = response.bits if bits else response.registers
        # Bits come padded to whole bytes; registers must be exactly the count asked for
        # (the byte count is fixed at 2 x N), or this is not the answer to this request.
        if len(values) < block.count or (not bits and len(values) != block.count):
            kind = "short_response" if len(values) < block.count else "wrong_length"
            raise _RequestFailed(f"{kind}: {len(values)} of {block.count}", device_dead=False)
        return list(values)

    async def _request(self, unit: int, function_code: int,
                       call: Callable[[], Awaitable[ModbusPDU]]) -> ModbusPDU:
        """One request on the line and its answer, or ``_RequestFailed`` saying why not."""
        if not self._client.connected:
            raise _RequestFailed(self._link.reason or "io_error: not connected",
                                 device_dead=True)
        await self._wait_for_quiet_line()
        pending = _Pending(unit, function_code, asyncio.get_running_loop().create_future())
        self._pending = pending
        task: asyncio.Task[ModbusPDU] = asyncio.ensure_future(call())
        try:
            await asyncio.wait({task, pending.abort}, timeout=self.bus.timeout_s
                               + TIMEOUT_SLACK_S, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._pending = None
            if not task.done():
                task.cancel()
                await asyncio.wait({task})
            if self._request_gap_s:
                self._quiet_at = max(self._quiet_at, time.monotonic() + self._request_gap_s)
        if pending.abort.done():
            reason = pending.abort.result()
            if reason.startswith("io_error"):
                self._link_down(reason)
                raise _RequestFailed(reason, device_dead=True)
            # The device answered, only the frame was damaged: it is alive, try again.
            raise _RequestFailed(reason, device_dead=False, retryable=True)
        if not task.done() or task.cancelled():
            raise _RequestFailed(self._no_answer(pending), device_dead=True, retryable=True)
        response = self._response(task, pending)
        if response.isError():
            code = getattr(response, "exception_code", None)
            raise _RequestFailed(f"exception_response: code {code}", device_dead=False,
                                 exception_code=code)
        if response.function_code != pending.function_code:
            # A gateway or converter that mixes up answers: right transaction, another
            # request's data. Never stored as the registers that were asked for.
            raise _RequestFailed(f"wrong_function: answer to function {response.function_code}"
                                 f" for a request of function {pending.function_code}",
                                 device_dead=False, retryable=True)
        return response

    def _response(self, task: asyncio.Task[ModbusPDU], pending: _Pending) -> ModbusPDU:
        from pymodbus.exceptions import ModbusException, ModbusIOException

        try:
            return task.result()
        except ModbusIOException:
            raise _RequestFailed(self._no_answer(pending), device_dead=True,
                                 retryable=True) from None
        except ModbusException as exc:
            # ConnectionException and friends: the link itself is gone.
            reason = f"io_error: {type(exc).__name__}"
            self._link_down(reason)
            raise _RequestFailed(reason, device_dead=True) from None
        except OSError as exc:
            reason = f"io_error: {exc.strerror or exc}"
            self._link_down(reason)
            raise _RequestFailed(reason, device_dead=True) from None

    @staticmethod
    def _no_answer(pending: _Pending) -> str:
        if pending.rx_bytes:
            return f"garbled_response: {pending.rx_bytes} bytes without a valid frame"
        return "timeout"

    async def poll(self, device: DeviceConfig) -> PollResult:
        """Read every block of the device's plan.

        The device is alive while any of its requests is answered with data: a register
        it refuses (an exception answer) marks only that request's points bad, so one
        unmapped register never takes the device offline or into backoff.
        """
        poll = _DevicePoll(device.id)
        frames_before = self._frames_sent
        try:
            await self._ensure_connected()
        except _RequestFailed as exc:
            poll.failed(exc)
        plan = self.plans[device.id]
        for block in list(plan):
            leaves = await self._read_or_split(device, block, poll)
            if len(leaves) > 1:
                self._remember_split(device, block, join_read(leaves))
        readings = self.conversions[device.id].apply(poll.readings)
        ok = poll.failure is None or poll.answered
        requests = self._frames_sent - frames_before
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
        except _RequestFailed as exc:
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
            await self._ensure_connected()
            if len(wanted) == 1:
                await self._retried(unit, 5, lambda: self._client.write_coil(
                    address, wanted[0], device_id=unit))
            else:
                await self._retried(unit, 15, lambda: self._client.write_coils(
                    address, list(wanted), device_id=unit))
            response = await self._retried(unit, 1, lambda: self._client.read_coils(
                address, count=len(wanted), device_id=unit))
        except _RequestFailed as exc:
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
                return await self._request(unit, function_code, call)
            except _RequestFailed as exc:
                if not exc.retryable or attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable: the last attempt raises")


class _DevicePoll:
    """What one poll of a device has gathered so far, block by block."""

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
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
        self.readings.extend(decode_point(self.device_id, p, block, values, ts)
                             for p in block.points)

    def failed(self, exc: _RequestFailed, block: ReadBlock | None = None) -> None:
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

