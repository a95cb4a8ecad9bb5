"""What every bus poller shares: the device schedule, health figures and link backoff.

A bus (an RS-485 line, a TCP endpoint, a serial port) is served by one task. Its devices
are served in order of their due time, so each keeps its interval and, when the bus is
saturated, the most overdue device goes first (a fair round robin). A device that keeps
failing is declared offline after ``offline_after`` failed polls and is then re-tried with
exponential backoff; a link that cannot be opened is re-opened with its own bounded
backoff, and when it comes back every device it took down is polled at once rather than
at the end of its backoff. Only state changes are logged; everything else is counted.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from drivers.decode import failed_points
from edge.config import DeviceConfig
from vocab.model import PollResult, Reading, now_ms

MAX_BACKOFF_S = 300.0
RECONNECT_MIN_S = 0.5
RECONNECT_MAX_S = 30.0
# A bus task never waits longer than this without going round its loop and stamping
# ``BusHealth.last_cycle_monotonic``: the daemon's watchdog reads that stamp, and a device
# polled every 10 minutes must not look like a hung task.
HEARTBEAT_S = 5.0


_log = structlog.get_logger("drivers.poll")


@dataclass
class DeviceHealth:
    """What the health topic reports about one device."""

    online: bool = True
    consecutive_failures: int = 0
    last_good_ms: int | None = None
    polls: int = 0
    errors: int = 0
    requests_last_cycle: int = 0
    last_error: str | None = None
    # Failed polls by kind (the reason up to its first ':'), e.g. timeout, crc_error.
    error_kinds: dict[str, int] = field(default_factory=dict)


@dataclass
class BusHealth:
    connected: bool = False
    cycles: int = 0
    devices: dict[str, DeviceHealth] = field(default_factory=dict)
    last_cycle_monotonic: float = field(default_factory=time.monotonic)
    reconnects: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    # Line-level events that belong to no single poll: bad NMEA checksums, lines that
    # match no pattern, bytes dropped from an overlong line.
    counters: dict[str, int] = field(default_factory=dict)

    def count(self, what: str, n: int = 1) -> None:
        self.counters[what] = self.counters.get(what, 0) + n


def failure_kind(reason: str) -> str:
    return reason.split(":", 1)[0]


class DeviceSchedule:
    """Due times of a bus's devices: who is next, and when after a poll."""

    def __init__(self, devices: Iterable[DeviceConfig]) -> None:
        self.devices = {d.id: d for d in devices}
        self.due: dict[str, float] = {}
        self.listening: set[str] = set()

    def start(self, listening: Iterable[str] = ()) -> None:
        """Everyone is due now, except ``listening`` devices (free-running instruments):
        their first poll reports what they said during a whole interval, and they are
        never backed off, since hearing them costs no bus time."""
        now = time.monotonic()
        self.listening = set(listening)
        self.due = {
            device_id: now + (device.poll_interval_s if device_id in self.listening else 0.0)
            for device_id, device in self.devices.items()
        }

    def next(self) -> tuple[DeviceConfig, float] | None:
        """The device due first (ties keep configuration order) and its due time."""
        device_id = min(self.due, key=lambda d: self.due[d], default=None)
        if device_id is None:
            return None
        return self.devices[device_id], self.due[device_id]

    def all_now(self, device_ids: Iterable[str] | None = None) -> None:
        now = time.monotonic()
        for device_id in list(self.due if device_ids is None else device_ids):
            if device_id in self.due:
                self.due[device_id] = min(self.due[device_id], now)

    def reschedule(self, device: DeviceConfig, state: DeviceHealth) -> None:
        interval = device.poll_interval_s
        if not state.online and device.id not in self.listening:
            excess = state.consecutive_failures - device.offline_after
            # The exponent is capped: 2 ** 1024 overflows a float after ~3 days offline.
            interval = min(interval * (2 ** min(max(0, excess), 16)),
                           max(MAX_BACKOFF_S, interval))
        # Keep the phase of the schedule but never queue up missed polls: after a stall
        # the device is polled once, not in a burst.
        due = self.due[device.id] + interval
        self.due[device.id] = max(due, time.monotonic())


class LinkBackoff:
    """Bounded exponential backoff for re-opening a port or connection."""

    def __init__(self, minimum: float = RECONNECT_MIN_S, maximum: float = RECONNECT_MAX_S):
        self.minimum = minimum
        self.maximum = maximum
        self.delay = 0.0
        self.retry_at = 0.0
        self.reason: str | None = None

    @property
    def failing(self) -> bool:
        return self.reason is not None

    def may_try(self) -> bool:
        return time.monotonic() >= self.retry_at

    def failed(self, reason: str) -> None:
        self.delay = min(max(self.delay * 2, self.minimum), self.maximum)
        self.retry_at = time.monotonic() + self.delay
        self.reason = reason

    def lost(self, reason: str) -> None:
        """The link dropped while open: try to re-open at once, back off from there."""
        self.retry_at = time.monotonic()
        self.reason = reason

    def succeeded(self) -> None:
        self.delay = 0.0
        self.retry_at = 0.0
        self.reason = None


class PollerControl:
    """The part every bus poller shares: being woken, asked to poll now, or to stop.

    Subclasses call ``__init__`` after building ``self.schedule`` and check
    ``self._stopping`` in their loop; ``_wake`` ends any wait early.
    """

    schedule: DeviceSchedule

    def __init__(self) -> None:
        self._wake = asyncio.Event()
        self._stopping = False

    async def _poll_and_hand_over(self, device: DeviceConfig) -> None:
        """Poll one device, give the result to the daemon, schedule its next poll.

        Whatever a driver raises becomes bad readings with the reason: the bus task, and
        with it every other device of the bus, never dies of one device's data.
        """
        bus_id = self.bus.id  # type: ignore[attr-defined]
        try:
            result = self.poll_device(device)  # type: ignore[attr-defined]
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:
            _log.exception("poll_unexpected_error", bus=bus_id, device=device.id)
            result = failed_result(bus_id, device, f"internal_error: {exc}")
        self.schedule.reschedule(device, self.health.devices[device.id])  # type: ignore[attr-defined]
        await self.sink(result)  # type: ignore[attr-defined]
        self.health.cycles += 1  # type: ignore[attr-defined]

    def poll_now(self) -> None:
        """Make every device of the bus due now (the ``inspect`` command)."""
        self.schedule.all_now()
        self._wake.set()

    def stop(self) -> None:
        """Finish the current device poll, then return from ``run``."""
        self._stopping = True
        self._wake.set()


def record_poll(
    log: Any,
    bus_id: str,
    device: DeviceConfig,
    state: DeviceHealth,
    ok: bool,
    failure: str | None,
    requests: int,
    readings: Sequence[Reading],
) -> None:
    """Update a device's health after a poll; log only when it goes offline or online."""
    state.polls += 1
    state.requests_last_cycle = requests
    if ok:
        state.consecutive_failures = 0
        state.last_good_ms = readings[-1].ts_ms if readings else now_ms()
        state.last_error = None
        if not state.online:
            state.online = True
            log.info("device_online", bus=bus_id, device=device.id)
        return
    state.errors += 1
    state.consecutive_failures += 1
    state.last_error = failure
    if failure:
        kind = failure_kind(failure)
        state.error_kinds[kind] = state.error_kinds.get(kind, 0) + 1
    if state.online and state.consecutive_failures >= device.offline_after:
        state.online = False
        log.warning(
            "device_offline",
            bus=bus_id,
            device=device.id,
            reason=failure,
            failures=state.consecutive_failures,
        )


def failed_result(bus_id: str, device: DeviceConfig, reason: str) -> PollResult:
    readings = tuple(failed_points(device.id, device.points, now_ms(), reason))
    return PollResult(bus_id, device.id, readings, 0, False, reason)
