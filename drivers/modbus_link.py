"""The Modbus link: one connection to an endpoint, shared by every bus and unit behind it.

A Modbus TCP endpoint is often a gateway in front of an RS-485 line (or a converter in
front of several slaves): one TCP connection, requests strictly one at a time, the unit
id naming the slave. Many such gateways accept a single connection, and every connection
costs the gateway a client, a transport and its buffers. So buses configured on the same
``host:port`` share one ``ModbusLink``: its requests are serialized by one lock, whichever
bus sends them, and its connection is opened, lost and re-opened once for all of them,
each bus's health following it.

A silent unit is not a dead connection: a gateway answers for its line, and a slave that
does not answer (unpowered, wrong unit id) times out while the others answer on the same
connection. pymodbus drops the connection after ``retries + 3`` unanswered requests in a
row, which on a shared endpoint would take every unit offline because one is dead; the
link decides instead, and drops the connection only when nothing on it has answered for
``DROP_AFTER_SILENT`` requests in a row to every unit it serves (a half-open connection,
a hung gateway). An RTU bus has a link of its own (its port is its own).

RTU specifics (drivers/modbus_rtu.py): the line is kept silent for 3.5 character times
after every frame before the next request, plus ``inter_request_delay_s`` for slow
slaves; a CRC error is noticed as soon as the frame is complete, not after the timeout.

TCP specifics (drivers/modbus_tcpstream.py): a stream that an earlier, timed-out answer
has put out of step (part of it left at the front, a frame with transaction id 0 ahead
of the answer) is dropped and re-opened, so an old answer is never read as a new one's
and a new answer is not refused for the old bytes in front of it.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from drivers.bus import BusHealth
from drivers.bustask import LinkBackoff
from drivers.modbus_rtu import check_rtu_reply, rtu_char_time, rtu_silence_s
from drivers.modbus_tcpstream import request_tid, stream_verdict

if TYPE_CHECKING:
    from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
    from pymodbus.pdu import ModbusPDU

log = structlog.get_logger("drivers.modbus")

# Slack on top of the client's own timeout before the poller stops waiting itself.
TIMEOUT_SLACK_S = 0.25
# Unanswered requests in a row, to every unit the link serves, before its connection is
# taken for dead and re-opened (pymodbus' own rule, retries + 3, counted per endpoint).
DROP_AFTER_SILENT = 4
# What a Modbus TCP connection reads at a time (an answer is at most 260 bytes; _small_reads).
TCP_READ_BYTES = 4096
# pymodbus must never drop a shared connection by itself: see the module docstring.
PYMODBUS_NEVER_DROPS = 2**31


class RequestFailed(Exception):
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


@dataclass(slots=True)  # one per bus: no __dict__ for 200 one-device buses
class LinkUser:
    """A bus on a link: its health figures, and the frames its requests put on the wire."""

    bus_id: str
    health: BusHealth
    timeout_s: float
    frames_sent: int = 0


@dataclass
class _Pending:
    """The request on the wire: whose it is, what answer is expected, what has arrived."""

    user: LinkUser
    unit: int
    function_code: int
    # The task waiting for the answer, and why the transport gave up on it (a CRC error,
    # the link lost, a stream out of step) before the client did.
    waiter: asyncio.Task[Any] | None
    verdict: str | None = None
    rx_bytes: int = 0

    def abort(self, verdict: str) -> None:
        """Stop waiting for the answer, from a transport callback."""
        if self.verdict is None:
            self.verdict = verdict
            if self.waiter is not None:
                self.waiter.cancel()


Tracer = Callable[[bool, bytes], bytes]


def make_client(bus: Any, trace_packet: Tracer | None = None,
                trace_connect: Callable[[bool], None] | None = None,
                ) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
    from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
    from pymodbus.framer import FramerType

    # reconnect_delay=0: the poller owns reconnection and its backoff, so a dead link is
    # retried on the bus schedule instead of by a hidden background loop. retries=0: the
    # poller retries itself, so a CRC error can be retried at once instead of after a
    # full timeout.
    if bus.type == "modbus_tcp":
        client: AsyncModbusTcpClient | AsyncModbusSerialClient = AsyncModbusTcpClient(
            bus.host, port=bus.port, timeout=bus.timeout_s, retries=0, reconnect_delay=0,
            name=bus.id, trace_packet=trace_packet, trace_connect=trace_connect)
    else:
        client = AsyncModbusSerialClient(
            bus.port, framer=FramerType.RTU, baudrate=bus.baudrate, bytesize=bus.bytesize,
            parity=bus.parity, stopbits=bus.stopbits, timeout=bus.timeout_s,
            retries=0, reconnect_delay=0, name=bus.id,
            trace_packet=trace_packet, trace_connect=trace_connect)
    client.set_max_no_responses(PYMODBUS_NEVER_DROPS)
    return client


@dataclass(slots=True)
class _Silence:
    """Unanswered requests in a row on the connection, and the units they went to."""

    requests: int = 0
    # Made at the first unanswered request: an empty set is 216 bytes, on every link.
    units: set[int] | None = None


class ModbusLink:
    """One connection (a TCP endpoint or a serial port) and the buses that use it."""

    def __init__(self, bus: Any, key: tuple[str, int] | None) -> None:
        self.key = key
        rtu = bus.type == "modbus_rtu"
        self.name: str = bus.port if rtu else f"{bus.host}:{bus.port}"
        self._port_path: str | None = bus.port if rtu else None
        self.rtu = rtu
        self._char_s = rtu_char_time(bus.baudrate) if rtu else 0.0
        self._silence_s = rtu_silence_s(bus.baudrate) if rtu else 0.0
        self._request_gap_s: float = bus.inter_request_delay_s if rtu else 0.0
        self._connect_timeout_s: float = bus.timeout_s
        self.users: dict[str, LinkUser] = {}
        self.units: set[int] = set()
        self._lock = asyncio.Lock()
        self._quiet_at = 0.0
        self._rx_seen = b""
        # The transaction id of the last TCP request sent (None for RTU and before any).
        self._tid: int | None = None
        self._pending: _Pending | None = None
        self._silent = _Silence()
        # The TCP stream holds bytes of an earlier answer that cannot be skipped: the
        # connection is re-opened before the next request.
        self._out_of_step = False
        self.backoff = LinkBackoff()
        self.client = make_client(bus, self._on_packet, self._on_connect)

    def join(self, bus: Any, health: BusHealth, units: set[int]) -> LinkUser:
        user = LinkUser(bus.id, health, bus.timeout_s)
        self.users[bus.id] = user
        self.units |= units
        health.connected = self.client.connected
        # The connection waits for an answer as long as the most patient bus on it;
        # each bus still stops waiting at its own timeout.
        self._connect_timeout_s = max(self._connect_timeout_s, bus.timeout_s)
        # The transaction manager waits with its own copy of the client's parameters
        # (pymodbus' transport copies them): setting only the client's left every bus on
        # the link cut off at the timeout of the bus that opened it.
        self.client.comm_params.timeout_connect = self._connect_timeout_s
        self.client.ctx.comm_params.timeout_connect = self._connect_timeout_s
        return user

    def leave(self, bus_id: str) -> bool:
        """Forget a bus; True when no bus uses the link any more (it is then closed)."""
        self.users.pop(bus_id, None)
        if self.users:
            return False
        self.client.close()
        return True

    @property
    def reopen_at(self) -> float | None:
        return self.backoff.retry_at if self.backoff.failing and not self.client.connected \
            else None

    # -- the connection -----------------------------------------------------------------

    async def ensure_connected(self) -> None:
        if self.client.connected:
            return
        async with self._lock:
            await self._connect()

    async def _connect(self) -> None:
        if self.client.connected:
            return  # another bus on the link opened it while this one waited
        if self.backoff.failing and not self.backoff.may_try():
            raise RequestFailed(self.backoff.reason or "connect_failed", device_dead=True)
        reason = self._port_missing()
        if reason is None:
            try:
                async with asyncio.timeout(self._connect_timeout_s + 1):  # vocab/waits.py
                    ok = await self.client.connect()
            except Exception as exc:  # pyserial also raises termios.error, not an OSError
                ok, reason = False, f"connect_failed: {exc or type(exc).__name__}"
            else:
                reason = None if ok else "connect_failed"
        if reason is not None:
            self.client.close()
            for user in self.users.values():
                if not self.backoff.failing or user.health.connected:
                    log.warning("bus_unavailable", bus=user.bus_id, reason=reason)
            self.backoff.failed(reason)
            self._set_connected(False)
            raise RequestFailed(reason, device_dead=True)
        if self.backoff.failing:
            # The bus tasks poll the devices the outage took down at once.
            for user in self.users.values():
                user.health.reconnects += 1
        self.backoff.succeeded()
        self._silent = _Silence()
        self._out_of_step = False
        self._small_reads()
        self._set_connected(True)

    def _small_reads(self) -> None:
        """Read a TCP connection a few KiB at a time, not asyncio's 256 KiB.

        asyncio's socket transport allocates its whole read size for every ``recv`` and
        shrinks it to what came. 256 KiB lies above glibc's trim threshold, so each read
        grows the heap and gives it back (two ``brk`` and a page fault): 9.2 µs a read
        against 2.1 at 4 KiB (bench/recv_size.py; docs/performance.md, "A read of 256
        KiB"), and a gateway with a device per endpoint reads once per poll. A Modbus TCP
        answer is at most 260 bytes. ``max_size`` is the selector transport's attribute
        (CPython 3.11 to 3.13); a transport without it (a serial line) reads as it does."""
        transport = getattr(self.client.ctx, "transport", None)
        if not self.rtu and transport is not None and hasattr(transport, "max_size"):
            transport.max_size = TCP_READ_BYTES

    def _port_missing(self) -> str | None:
        if self._port_path is None:
            return None
        if not os.path.exists(self._port_path):
            return f"connect_failed: {self._port_path} not found"
        if not os.access(self._port_path, os.R_OK | os.W_OK):
            return f"connect_failed: no read/write permission on {self._port_path}"
        return None

    def _link_down(self, reason: str) -> None:
        self.client.close()
        self.backoff.lost(reason)
        self._set_connected(False, reason)

    def _set_connected(self, connected: bool, reason: str | None = None) -> None:
        for user in self.users.values():
            health = user.health
            if connected == health.connected:
                continue
            health.connected = connected
            if connected:
                log.info("bus_connected", bus=user.bus_id, endpoint=self.name,
                         reconnects=health.reconnects)
            else:
                log.warning("bus_disconnected", bus=user.bus_id, endpoint=self.name,
                            reason=reason)

    def _on_connect(self, connected: bool) -> None:
        if connected:
            return
        # The transport saw the port or socket fail (a USB adapter unplugged, the peer
        # closed): the request in flight will never be answered.
        pending = self._pending
        if pending is not None:
            pending.abort("io_error: link lost")
        self.backoff.lost("io_error: link lost")
        self._set_connected(False, "io_error: link lost")

    def _on_packet(self, sending: bool, data: bytes) -> bytes:
        now = time.monotonic()
        pending = self._pending
        if sending:
            if pending is not None:
                pending.user.frames_sent += 1
                pending.user.health.bytes_sent += len(data)
            self._rx_seen = b""
            if not self.rtu:
                self._tid = request_tid(data)
            # If nothing answers, the line is free once our frame is out and has been
            # followed by the silence.
            self._quiet_at = now + len(data) * self._char_s + self._silence_s
            return data
        # The client hands over its whole receive buffer: count only what is new.
        new = len(data) - len(self._rx_seen) if data.startswith(self._rx_seen) else len(data)
        self._rx_seen = data
        self._quiet_at = now + self._silence_s
        if pending is None:
            if not self.rtu and stream_verdict(data, None) is not None:
                # Part of a timed-out answer arrived between requests: pymodbus clears
                # its buffer at the next send, and the rest would lead that answer.
                self._out_of_step = True
            return data
        pending.user.health.bytes_received += new
        pending.rx_bytes += new
        if pending.verdict is None:
            verdict = check_rtu_reply(data, pending.unit, pending.function_code) \
                if self.rtu else stream_verdict(data, self._tid)
            if verdict is not None:
                pending.abort(verdict)
        return data

    # -- requests -----------------------------------------------------------------------

    async def request(self, user: LinkUser, unit: int, function_code: int,
                      call: Callable[[], Awaitable[ModbusPDU]]) -> ModbusPDU:
        """One request on the link and its answer, or ``RequestFailed`` saying why not.
        Requests of every bus on the link go one at a time."""
        async with self._lock:
            if self._out_of_step:
                self._link_down("out_of_step: part of an earlier answer left on the stream")
                await self._connect()
            if not self.client.connected:
                raise RequestFailed(self.backoff.reason or "io_error: not connected",
                                    device_dead=True)
            await self._wait_for_quiet_line()
            pending = _Pending(user, unit, function_code, asyncio.current_task())
            try:
                return await self._exchange(pending, call)
            except RequestFailed as exc:
                if exc.reason == "timeout":
                    self._unanswered(unit)
                elif not self.rtu and self.client.connected \
                        and stream_verdict(self._rx_seen, None) is not None:
                    # Unanswered with part of a frame received: the rest may yet come.
                    self._out_of_step = True
                raise
            finally:
                if pending.rx_bytes and self._silent.requests:
                    self._silent = _Silence()  # something on the link answered

    async def _exchange(self, pending: _Pending,
                        call: Callable[[], Awaitable[ModbusPDU]]) -> ModbusPDU:
        # The answer is awaited in the bus's own task, not in one of its own watched with
        # asyncio.wait: that cost a task, two futures and their callbacks per request.
        # The transport's verdicts stop the wait by cancelling it (_Pending.abort).
        self._pending = pending
        try:
            response = await self._answer(pending, call)
        finally:
            self._pending = None
            pending.waiter = None
            if self._request_gap_s:
                self._quiet_at = max(self._quiet_at, time.monotonic() + self._request_gap_s)
        if response is None:
            reason = pending.verdict or "io_error: aborted"
            if reason.startswith(("io_error", "out_of_step")):
                self._link_down(reason)
                raise RequestFailed(reason, device_dead=True)
            # The device answered, only the frame was damaged: it is alive, try again.
            raise RequestFailed(reason, device_dead=False, retryable=True)
        if response.isError():
            code = getattr(response, "exception_code", None)
            raise RequestFailed(f"exception_response: code {code}", device_dead=False,
                                exception_code=code)
        if response.function_code != pending.function_code:
            # A gateway or converter that mixes up answers: right transaction, another
            # request's data. Never stored as the registers that were asked for.
            raise RequestFailed(f"wrong_function: answer to function {response.function_code}"
                                f" for a request of function {pending.function_code}",
                                device_dead=False, retryable=True)
        return response

    async def _answer(self, pending: _Pending,
                      call: Callable[[], Awaitable[ModbusPDU]]) -> ModbusPDU | None:
        """The client's answer; None when the transport aborted the request."""
        from pymodbus.exceptions import ModbusException, ModbusIOException

        task = pending.waiter
        # Cancellations of this task already under way (none in a running bus task).
        before = task.cancelling() if task is not None else 0
        try:
            if pending.user.timeout_s >= self._connect_timeout_s:
                # pymodbus waits as long as the most patient bus on the link (join): its
                # wait_for ends first, no limit of ours is needed (a timer and a timeout
                # context less a request, on every link that serves one bus).
                response = await call()
            else:
                # A less patient bus stops waiting itself.
                async with asyncio.timeout(pending.user.timeout_s + TIMEOUT_SLACK_S):
                    response = await call()
        except asyncio.CancelledError:
            # Ours (an abort) is taken back; any other cancellation goes on.
            if pending.verdict is None or task is None or task.uncancel() > before:
                raise
            return None
        except (TimeoutError, ModbusIOException):
            raise RequestFailed(self._no_answer(pending), device_dead=True,
                                retryable=True) from None
        except (ModbusException, OSError) as exc:
            # ConnectionException and friends: the link itself is gone.
            reason = f"io_error: {exc.strerror or exc}" if isinstance(exc, OSError) \
                else f"io_error: {type(exc).__name__}"
            self._link_down(reason)
            raise RequestFailed(reason, device_dead=True) from None
        if task is None:
            return response if pending.verdict is None else None
        if pending.verdict is not None:
            # Aborted as the answer came: pymodbus' wait_for (Python 3.11) took the answer
            # and swallowed the cancel (vocab/waits.py); it is taken back all the same.
            task.uncancel()
        if task.cancelling() > before:
            # A stop that came with the answer, swallowed the same way: it must not be
            # lost, or the bus task polls on after the daemon stopped it.
            raise asyncio.CancelledError
        return response if pending.verdict is None else None

    def _unanswered(self, unit: int) -> None:
        """Count a timeout; drop the connection when no unit on it answers any more."""
        silent = self._silent
        silent.requests += 1
        if silent.units is None:
            silent.units = set()
        silent.units.add(unit)
        if silent.requests >= DROP_AFTER_SILENT and silent.units >= self.units:
            self._link_down("io_error: endpoint not answering")

    async def _wait_for_quiet_line(self) -> None:
        delay = self._quiet_at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    @staticmethod
    def _no_answer(pending: _Pending) -> str:
        if pending.rx_bytes:
            return f"garbled_response: {pending.rx_bytes} bytes without a valid frame"
        return "timeout"
