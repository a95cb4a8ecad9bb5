"""A serial port read as text lines, without ever blocking the event loop.

Serves the text instruments and GNSS receivers of a site, which print lines over RS-232 or
RS-485 (often through a USB adapter). pyserial opens the port non-blocking (timeout 0) and
the event loop watches its file descriptor, so a silent or vanished instrument costs no
thread and never stalls the other buses. Lines end at CR, LF or CRLF.

On an I/O error (the adapter unplugged) the port is closed and every waiting read fails at
once; ``ensure_open`` re-opens it by path with bounded exponential backoff, so when the
``/dev/serial/by-id/...`` link comes back reading resumes without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from drivers.bus import BusHealth, SerialPortSettings
from drivers.bustask import LinkBackoff
from vocab.model import now_ms
from vocab.waits import Wake, wait_set

if TYPE_CHECKING:
    # pyserial is imported when a port is first opened: the configuration loads the
    # serial drivers' models on every site.
    import serial

_LINE_END = re.compile(rb"\r\n|\r|\n")


class PortUnavailable(Exception):
    """The port is not open and may not be re-opened yet; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Line:
    text: str
    ts_ms: int  # wall clock when its last byte arrived: the acquisition time


class LinePort:
    """One serial port delivering complete lines; see the module docstring."""

    def __init__(
        self,
        bus_id: str,
        bus: SerialPortSettings,
        health: BusHealth,
        log: Any,
        encoding: str = "ascii",
        max_lines: int = 64,
        max_line_bytes: int = 512,
    ) -> None:
        self.bus_id = bus_id
        self.bus = bus
        self.health = health
        self.log = log
        self.encoding = encoding
        self.max_line_bytes = max_line_bytes
        self._serial: serial.Serial | None = None
        self._buffer = b""
        self._lines: deque[Line] = deque(maxlen=max_lines)
        self._ready = asyncio.Event()
        self._link = LinkBackoff()

    @property
    def is_open(self) -> bool:
        return self._serial is not None

    @property
    def reason(self) -> str:
        """Why the port is closed (meaningful only while it is)."""
        return self._link.reason or "io_error: port closed"

    @property
    def retry_at(self) -> float | None:
        """When a closed port may be tried again (None while it is open)."""
        return None if self.is_open else self._link.retry_at

    async def ensure_open(self) -> None:
        if self._serial is not None:
            return
        if self._link.failing and not self._link.may_try():
            raise PortUnavailable(self._link.reason or "connect_failed")
        reason: str | None = None
        port = self.bus.port
        if not os.path.exists(port):
            reason = f"connect_failed: {port} not found"
        else:
            import serial

            try:
                handle = serial.serial_for_url(
                    port,
                    baudrate=self.bus.baudrate,
                    bytesize=self.bus.bytesize,
                    parity=self.bus.parity,
                    stopbits=self.bus.stopbits,
                    timeout=0,
                    write_timeout=0,
                    exclusive=True,
                )
            except Exception as exc:  # pyserial also raises termios.error, not an OSError
                reason = f"connect_failed: {exc}"
        if reason is not None:
            if not self._link.failing or self.health.connected:
                self.log.warning("bus_unavailable", bus=self.bus_id, reason=reason)
            self._link.failed(reason)
            self.health.connected = False
            raise PortUnavailable(reason)
        self._serial = handle
        self._buffer = b""
        asyncio.get_running_loop().add_reader(handle.fileno(), self._readable)
        if self._link.failing:
            self.health.reconnects += 1
        self._link.succeeded()
        self.health.connected = True
        self.log.info("bus_connected", bus=self.bus_id, reconnects=self.health.reconnects)

    def close(self) -> None:
        handle, self._serial = self._serial, None
        if handle is None:
            return
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(handle.fileno())
        with contextlib.suppress(Exception):
            handle.close()
        self._ready.set()

    def _lost(self, reason: str) -> None:
        self.close()
        self._link.lost(reason)
        if self.health.connected:
            self.health.connected = False
            self.log.warning("bus_disconnected", bus=self.bus_id, reason=reason)

    def discard_input(self) -> None:
        """Forget what arrived so far (a late answer to an earlier command)."""
        self._lines.clear()
        self._buffer = b""

    async def write(self, data: bytes, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while data:
            handle = self._serial
            if handle is None:
                raise PortUnavailable(self.reason)
            try:
                written = handle.write(data) or 0
            except OSError as exc:  # serial.SerialException is an OSError
                reason = f"io_error: {exc}"
                self._lost(reason)
                raise PortUnavailable(reason) from None
            self.health.bytes_sent += written
            data = data[written:]
            if data:
                if time.monotonic() >= deadline:
                    raise PortUnavailable("io_error: write timed out")
                await asyncio.sleep(0.005)

    async def read_line(self, timeout: float) -> Line | None:
        """The next line, or None after ``timeout`` seconds without one."""
        deadline = time.monotonic() + timeout
        while not self._lines:
            if self._serial is None:
                raise PortUnavailable(self.reason)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self._ready.clear()
            await wait_set(self._ready, remaining)
        return self._lines.popleft()

    def _readable(self) -> None:
        handle = self._serial
        if handle is None:
            return
        try:
            data = handle.read(4096)
        except OSError as exc:  # serial.SerialException is an OSError
            self._lost(f"io_error: {exc}")
            return
        self.health.bytes_received += len(data)
        self._buffer += data
        *complete, self._buffer = _LINE_END.split(self._buffer)
        if len(self._buffer) > self.max_line_bytes:
            # No line end in sight: noise, or the wrong baud rate. Drop it so one bad
            # stretch cannot grow without bound or swallow the next good line.
            self.health.count("overlong_line_bytes", len(self._buffer))
            self._buffer = b""
        ts = now_ms()
        for raw in complete:
            if not raw:
                continue
            if len(self._lines) == self._lines.maxlen:
                self.health.count("lines_dropped")
            self._lines.append(Line(raw.decode(self.encoding, errors="replace"), ts))
        if self._lines:
            self._ready.set()


async def listen_lines(port: LinePort, until: float, wake: Wake,
                       take: Callable[[Line], object]) -> None:
    """Hear a free-running instrument or receiver until ``until`` (monotonic) or ``wake``:
    each complete line goes to ``take``; a closed port is re-opened when its backoff
    allows."""
    while not wake.is_set() and time.monotonic() < until:
        try:
            await port.ensure_open()
            line = await port.read_line(min(until - time.monotonic(), 1.0))
        except PortUnavailable:
            await wake.sleep_until(min(until, port.retry_at or until))
            continue
        if line is not None:
            take(line)
