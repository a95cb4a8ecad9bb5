"""Text instruments on a serial line: ask-and-answer or free-running, parsed by a regex.

Models the many field instruments that speak plain ASCII instead of Modbus: a radar level
gauge answering ``READ\\r\\n`` with ``LEVEL=123.456 m``, a weir-head logger or a
water-quality probe that prints a line every few seconds, addressable RS-485 ASCII
loggers (``#01\\r``). Configuration (edge/config.py): a ``serial_line`` bus
(``SerialLineBus``: port, baudrate, parity, stopbits, timeout_s) and, per device, ``line``
(``LineFormat``: ``command`` sent each poll, or none for a free-running instrument, and a
``pattern`` with named groups); each point names its group with ``field``.

Request/response devices on one line are asked strictly one at a time, in order of due
time; each poll discards whatever arrived before the command, then waits up to
``timeout_s`` for a line that matches (lines that do not match are counted: an echo, a
banner, noise). A free-running instrument owns its port: every line is parsed as it
arrives and each poll reports the last match of its interval, stamped when it arrived.
Values then go through the same scale/offset/range and calibration as Modbus points.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Awaitable, Callable

import structlog

from drivers.decode import DeviceConversions, failed_points, scaled_reading
from drivers.lineport import Line, LinePort, PortUnavailable
from drivers.pollbase import (
    HEARTBEAT_S,
    BusHealth,
    DeviceHealth,
    DeviceSchedule,
    PollerControl,
    record_poll,
)
from edge.config import DeviceConfig, LineFormat, SerialLineBus
from vocab.model import PollResult, Reading, now_ms

log = structlog.get_logger("drivers.serial_line")

PollSink = Callable[[PollResult], Awaitable[None]]


def _line_format(device: DeviceConfig) -> LineFormat:
    if device.line is None:
        raise ValueError(f"device {device.id} has no 'line' format")
    return device.line


def parse_line(device: DeviceConfig, pattern: re.Pattern[str], line: Line) -> list[Reading] | None:
    """Readings from a line that matches the device's pattern, None when it does not."""
    match = pattern.search(line.text)
    if match is None:
        return None
    readings = []
    for point in device.points:
        text = match.group(point.field) if point.field else None
        if text is None:
            readings.append(
                Reading(
                    device.id, point.id, line.ts_ms, None, point.unit, "bad", None, "missing_field"
                )
            )
            continue
        try:
            raw = float(text.strip())
        except ValueError:
            readings.append(
                Reading(
                    device.id,
                    point.id,
                    line.ts_ms,
                    None,
                    point.unit,
                    "bad",
                    None,
                    f"not_a_number: {text[:20]!r}",
                )
            )
            continue
        readings.append(scaled_reading(device.id, point, raw, line.ts_ms))
    return readings


class SerialLinePoller(PollerControl):
    def __init__(self, bus: SerialLineBus, devices: list[DeviceConfig], sink: PollSink) -> None:
        self.bus = bus
        self.devices = {d.id: d for d in devices}
        self.sink = sink
        self.health = BusHealth(devices={d.id: DeviceHealth() for d in devices})
        self.schedule = DeviceSchedule(devices)
        self.conversions = {d.id: DeviceConversions(d) for d in devices}
        self.patterns = {d.id: re.compile(_line_format(d).pattern) for d in devices}
        self.port = LinePort(bus, self.health, log, encoding=bus.encoding)
        # A free-running instrument is alone on its port (the config check enforces it).
        self._free_running = next((d for d in devices if _line_format(d).command is None), None)
        self._latest: list[Reading] | None = None
        self._unmatched: Line | None = None
        PollerControl.__init__(self)

    async def run(self) -> None:
        self.schedule.start(listening=[self._free_running.id] if self._free_running else [])
        try:
            while not self._stopping:
                self.health.last_cycle_monotonic = time.monotonic()
                upcoming = self.schedule.next()
                if upcoming is None:
                    await self._idle(HEARTBEAT_S)
                    continue
                device, due = upcoming
                if time.monotonic() < due:
                    await self._idle(min(due - time.monotonic(), HEARTBEAT_S))
                    continue
                await self._poll_and_hand_over(device)
        finally:
            self.port.close()

    async def _idle(self, seconds: float) -> None:
        """Wait for the next due time; a free-running instrument is listened to meanwhile."""
        deadline = time.monotonic() + seconds
        self._wake.clear()
        while not self._wake.is_set() and time.monotonic() < deadline:
            if self._free_running is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), deadline - time.monotonic())
                return
            try:
                await self.port.ensure_open()
                line = await self.port.read_line(min(deadline - time.monotonic(), 1.0))
            except PortUnavailable:
                retry = self.port.retry_at or deadline
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._wake.wait(), max(0.0, min(deadline, retry) - time.monotonic())
                    )
                continue
            if line is not None:
                self._take(self._free_running, line)

    def _take(self, device: DeviceConfig, line: Line) -> list[Reading] | None:
        readings = parse_line(device, self.patterns[device.id], line)
        if readings is None:
            self.health.count("unmatched_lines")
            self._unmatched = line
            return None
        self._latest = readings
        return readings

    async def poll_device(self, device: DeviceConfig) -> PollResult:
        command = _line_format(device).command
        if command is None:
            # The last line that matched during the interval, stamped when it arrived.
            readings, self._latest = self._latest, None
            failure, requests = None, 0
            if readings is None:
                failure = self._no_line_reason()
                readings = failed_points(device.id, device.points, now_ms(), failure)
            self._unmatched = None
        else:
            requests = 1
            readings, failure = await self._ask(device, command)
        readings = self.conversions[device.id].apply(readings)
        ok = failure is None
        record_poll(
            log,
            self.bus.id,
            device,
            self.health.devices[device.id],
            ok,
            failure,
            requests,
            readings,
        )
        return PollResult(self.bus.id, device.id, tuple(readings), requests, ok, failure)

    def _no_line_reason(self) -> str:
        if not self.port.is_open:
            return self.port.reason
        if self._unmatched is not None:
            return f"parse_error: no match in {self._unmatched.text[:40]!r}"
        return "no_data"

    async def _ask(self, device: DeviceConfig, command: str) -> tuple[list[Reading], str | None]:
        try:
            await self.port.ensure_open()
            self.port.discard_input()
            self._unmatched = None
            await self.port.write(
                command.encode(self.bus.encoding, errors="replace"), self.bus.timeout_s
            )
            deadline = time.monotonic() + self.bus.timeout_s
            while True:
                line = await self.port.read_line(deadline - time.monotonic())
                if line is None:
                    reason = "timeout"
                    if self._unmatched is not None:
                        reason = f"parse_error: no match in {self._unmatched.text[:40]!r}"
                    break
                readings = self._take(device, line)
                if readings is not None:
                    self._latest = None
                    return readings, None
        except PortUnavailable as exc:
            reason = exc.reason
        self._unmatched = None
        return failed_points(device.id, device.points, now_ms(), reason), reason
