"""Text instruments on a serial line: ask-and-answer or free-running, parsed by a regex.

Models the many field instruments that speak plain ASCII instead of Modbus: a radar level
gauge answering ``READ\\r\\n`` with ``LEVEL=123.456 m``, a weir-head logger or a
water-quality probe that prints a line every few seconds, addressable RS-485 ASCII
loggers (``#01\\r``). Configuration: a ``serial_line`` bus
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

import re
import time
from collections.abc import Sequence
from typing import Any, Literal

import structlog
from pydantic import Field

from drivers.bus import (
    BusHealth,
    BusType,
    SerialPortSettings,
    check_alone_on_port,
    check_field_points,
)
from drivers.decode import DeviceConversions, failed_points, scaled_reading
from drivers.devices import DeviceConfig, LineFormat
from drivers.lineport import Line, LinePort, PortUnavailable, listen_lines
from vocab.checking import PathKey, Report
from vocab.ids import Ident
from vocab.model import PollResult, Reading, now_ms
from vocab.waits import Wake

log = structlog.get_logger("drivers.serial_line")


class SerialLineBus(SerialPortSettings):
    """A serial port with a text instrument (RS-232/RS-485 ASCII): see drivers/serial_line."""

    id: Ident
    type: Literal["serial_line"]
    # How long a request/response instrument may take to answer its command.
    timeout_s: float = Field(default=1.0, gt=0, le=60)
    encoding: Literal["ascii", "latin-1", "utf-8"] = "ascii"


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


class SerialLineDriver:
    """The text instruments of one serial port (a ``FieldDriver``)."""

    def __init__(self, bus: SerialLineBus, devices: list[DeviceConfig],
                 health: BusHealth) -> None:
        self.bus = bus
        self.health = health
        self.conversions = {d.id: DeviceConversions(d) for d in devices}
        self.patterns = {d.id: re.compile(_line_format(d).pattern) for d in devices}
        self.port = LinePort(bus.id, bus, health, log, encoding=bus.encoding)
        # A free-running instrument is alone on its port (the config check enforces it).
        self._free_running = next((d for d in devices if _line_format(d).command is None), None)
        self._latest: list[Reading] | None = None
        self._unmatched: Line | None = None

    @property
    def listening(self) -> Sequence[str]:
        return (self._free_running.id,) if self._free_running else ()

    # The port is opened by each poll (and by listening): nothing to re-open on a timer.
    reopen_at: float | None = None

    async def reopen(self) -> None:
        return None

    def close(self) -> None:
        self.port.close()

    async def listen(self, until: float, wake: Wake) -> None:
        """Hear the free-running instrument until the next due time."""
        device = self._free_running
        if device is None:
            await wake.sleep_until(until)
            return
        await listen_lines(self.port, until, wake, lambda line: self._take(device, line))

    def _take(self, device: DeviceConfig, line: Line) -> list[Reading] | None:
        readings = parse_line(device, self.patterns[device.id], line)
        if readings is None:
            self.health.count("unmatched_lines")
            self._unmatched = line
            return None
        self._latest = readings
        return readings

    async def poll(self, device: DeviceConfig) -> PollResult:
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
        return PollResult(self.bus.id, device.id, tuple(readings), requests, failure is None,
                          failure)

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


def check_device(bus: SerialLineBus, device: DeviceConfig, here: PathKey,
                 earlier: Sequence[DeviceConfig], report: Report) -> None:
    """A text instrument needs its line format, and each point a group of its pattern."""
    if device.line is None:
        report(here, f"device {device.id!r} on serial_line bus {bus.id!r} needs 'line' "
                     "(a pattern with named groups, and a command unless it is free-running)")
    check_alone_on_port(bus, device, here, earlier,
                        lambda d: d.line is not None and d.line.command is None, report)
    groups = device.line.groups if device.line is not None else []
    for where, name in check_field_points(bus, device, here, groups, report):
        if device.line is not None and name not in groups:
            report(where, f"field {name!r} is not a named group of the line pattern "
                          f"(groups: {', '.join(groups)})")


def make_driver(bus: Any, devices: list[DeviceConfig], health: BusHealth) -> SerialLineDriver:
    return SerialLineDriver(bus, devices, health)


BUS_TYPE = BusType(SerialLineBus, check_device, make_driver,
                   device_keys={"line": "a serial_line bus"})
