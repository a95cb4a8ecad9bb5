"""The task that serves one bus: device schedule, health figures, heartbeat, poll tail.

A bus (an RS-485 line, a TCP endpoint, a serial port) is served by one task, the same
for every bus type; how a device is polled is its ``FieldDriver``'s (drivers/bus.py). Its devices
are served in order of their due time, so each keeps its interval and, when the bus is
saturated, the most overdue device goes first (a fair round robin: of devices due at the
same time, the one polled longest ago).

A polled device is due on the boundaries of its interval: one grid for every bus of the
process (``schedule_grid``: whole multiples of the interval on the wall clock, as taken at
the start), so all devices of one interval come due together and are polled in one burst,
a round, starting at the same instant every interval, and the rounds of every bus (a
level gauge on its own port, an RS-485 line, 200 piezometers each on its own endpoint)
start together too. The store commits a round in one transaction (edge/pipeline.py: a
result carries ``mid_round`` while more devices of its bus's round are still due), instead
of one per device or per bus finishing somewhere in the second. A device that fell
behind (a saturated bus) goes to the next boundary after now, never catching up missed
ones in a burst. A poll off the grid (the start-up poll, an inspection, a link back) joins
it at least half an interval on. Devices that only listen (free-running instruments) cost
no bus time and keep their own phase. A device that keeps
failing is declared offline after ``offline_after`` failed polls and is then re-tried with
exponential backoff; a link that cannot be opened is re-opened with its own bounded
backoff, and when it comes back every device it took down is polled at once rather than
at the end of its backoff. Only state changes are logged; everything else is counted.

A relay module on the bus (a siren, a beacon) is switched between device polls: a coil
write waits for the device poll in progress to end, goes next, and is followed by at
least one device poll before another write when polls are due. So writing delays the
schedule of the other devices by at most one write and its read-back, never splits a
device's poll, and a burst of writes cannot starve the polling.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import math
import time
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass
from typing import cast

import structlog

from drivers.bus import (
    BusHealth,
    CoilWrite,
    CoilWriter,
    DeviceHealth,
    FieldDriver,
    PollSink,
)
from drivers.decode import failed_points
from drivers.devices import DeviceConfig
from vocab.model import PollResult, now_ms
from vocab.waits import Wake

MAX_BACKOFF_S = 300.0
RECONNECT_MIN_S = 0.5
RECONNECT_MAX_S = 30.0
# A bus task never waits longer than this without going round its loop and stamping
# ``BusHealth.last_cycle_monotonic``: the daemon's watchdog reads that stamp, and a device
# polled every 10 minutes must not look like a hung task.
HEARTBEAT_S = 5.0


_log = structlog.get_logger("drivers.bustask")


def failure_kind(reason: str) -> str:
    return reason.split(":", 1)[0]


@functools.cache
def schedule_grid() -> float:
    """The monotonic time of the polling grid's origin, the same for every bus of the
    process: boundaries ``schedule_grid() + k * interval`` fall on the wall clock's
    multiples of ``interval`` from midnight UTC (for intervals that divide a day: the
    minute for 60 s, the second for 1 s), as the wall clock stood when first asked.

    Monotonic, not the wall clock, after that: a clock step (NTP, a keeper setting the
    time) neither bunches nor skips polls; the grid merely stops being on the second."""
    day = 86_400.0
    return time.monotonic() - (time.time() % day)


def next_boundary(now: float, interval: float, offset: float = 0.0) -> float:
    """The first boundary ``offset + k * interval`` (k an integer) at or after ``now``."""
    if interval <= 0:
        return now
    k = math.ceil((now - offset) / interval)
    # The quotient and the products are rounded: the ceiling can be one interval off
    # either way, and a boundary that is ``now`` can come out a few ulps before it. Such a
    # boundary counts as ``now`` (returned as ``now``), not as missed: a poll one whole
    # interval late for a rounding error would be a lost round.
    slack = 8 * math.ulp(max(abs(now), abs(offset), interval))
    if offset + (k - 1) * interval >= now - slack:
        k -= 1
    elif offset + k * interval < now - slack:
        k += 1
    return max(offset + k * interval, now)


def boundary_after(now: float, interval: float, offset: float = 0.0) -> float:
    """The first boundary ``offset + k * interval`` strictly after ``now``."""
    if interval <= 0:
        return now
    boundary = next_boundary(now, interval, offset)
    return boundary if boundary > now else boundary + interval


# The listening devices of a bus that has none: one object for every such bus.
NOBODY: frozenset[str] = frozenset()


class DeviceSchedule:
    """Due times of a bus's devices: who is next, and when after a poll.

    Polled devices are due on the boundaries of their interval from ``offset`` (the
    process's ``schedule_grid``); listening devices keep the phase of their start."""

    def __init__(self, devices: Iterable[DeviceConfig], offset: float | None = None) -> None:
        self.devices = {d.id: d for d in devices}
        self.due: dict[str, float] = {}
        # Most buses listen to nobody: they share one empty frozenset (each frozenset(),
        # like each set(), is 216 bytes of its own, on each of 200 buses).
        self.listening: frozenset[str] = NOBODY
        self.offset = schedule_grid() if offset is None else offset
        # When each device's last poll began: of devices due together, the one polled
        # longest ago goes first.
        self.polled_at: dict[str, float] = {}
        # When each device was last asked for now (an inspection), until its next poll.
        self.asked: dict[str, float] = {}
        # Devices whose next poll is off the grid (the start, an inspection, a link back),
        # and when they were made due: the devices made due together join the grid
        # together, at the first boundary half an interval after that.
        self.off_grid: dict[str, float] = {}

    def start(self, listening: Iterable[str] = ()) -> None:
        """Everyone is due now, except ``listening`` devices (free-running instruments):
        their first poll reports what they said during a whole interval, and they are
        never backed off, since hearing them costs no bus time. A polled device's first
        poll is at once, off the grid (readings at start-up, not up to an interval
        later); from its second on it is on the grid."""
        now = time.monotonic()
        self.listening = frozenset(listening) or NOBODY
        self.due = {
            device_id: now + (device.poll_interval_s if device_id in self.listening else 0.0)
            for device_id, device in self.devices.items()
        }
        self.off_grid = dict.fromkeys(set(self.devices) - self.listening, now)

    def next(self) -> tuple[DeviceConfig, float] | None:
        """The device due first and its due time; of those due at the same time, the one
        polled longest ago (the configuration's order at the start)."""
        device_id = min(self.due, default=None,
                        key=lambda d: (self.due[d], self.polled_at.get(d, -math.inf)))
        if device_id is None:
            return None
        return self.devices[device_id], self.due[device_id]

    def round_pending(self, now: float | None = None) -> bool:
        """Whether a polled device is still due: the round under way is not finished."""
        now = time.monotonic() if now is None else now
        return any(due <= now for device_id, due in self.due.items()
                   if device_id not in self.listening)

    def all_now(self, device_ids: Iterable[str] | None = None) -> None:
        now = time.monotonic()
        for device_id in list(self.due if device_ids is None else device_ids):
            if device_id in self.due:
                self.due[device_id] = min(self.due[device_id], now)
                self.asked[device_id] = now
                self.off_grid[device_id] = now

    def reschedule(self, device: DeviceConfig, state: DeviceHealth,
                   started: float | None = None) -> None:
        """The next due time after a poll that began at ``started`` (monotonic)."""
        now = time.monotonic()
        if started is not None:
            self.polled_at[device.id] = started
        asked = self.asked.pop(device.id, None)
        if asked is not None and started is not None and asked > started:
            # Asked for while this poll ran: what it read may predate the question (the
            # one-click inspection must report readings taken after the button).
            self.due[device.id] = now
            return
        interval = device.poll_interval_s
        off_grid_since = self.off_grid.pop(device.id, None)
        if off_grid_since is not None and not self.off_grid:
            # Emptied (the start-up round is done): a dict keeps its table when emptied,
            # a fresh one has none, and most buses have one device.
            self.off_grid = {}
        if device.id in self.listening:
            # Keep the phase of the schedule but never queue up missed polls: after a
            # stall the device is polled once, not in a burst.
            self.due[device.id] = max(self.due[device.id] + interval, now)
            return
        if state.online:
            # The first boundary after the poll began: one that came while it ran is due
            # at once (one poll late, not lost); boundaries missed before it began are
            # skipped, never caught up in a burst.
            begun = now if started is None else min(started, now)
            if off_grid_since is not None:
                # This poll was off the grid (the start-up poll, an inspection's): the
                # next boundary may be only moments away, so the devices made due with
                # it join the grid together, at least half an interval on, instead of
                # being polled twice at once (or split over two rounds).
                begun = max(begun, off_grid_since + interval / 2)
            self.due[device.id] = boundary_after(begun, interval, self.offset)
            return
        excess = state.consecutive_failures - device.offline_after
        # The exponent is capped: 2 ** 1024 overflows a float after ~3 days offline.
        wait = min(interval * (2 ** min(max(0, excess), 16)), max(MAX_BACKOFF_S, interval))
        # The backoff runs from the failed poll's end and comes back on a boundary, so
        # with the device's round.
        self.due[device.id] = boundary_after(now + wait - interval, interval, self.offset)


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


def record_poll(bus_id: str, device: DeviceConfig, state: DeviceHealth,
                result: PollResult) -> None:
    """Update a device's health after a poll; log only when it goes offline or online."""
    state.polls += 1
    state.requests_last_cycle = result.requests
    if result.ok:
        state.consecutive_failures = 0
        state.last_good_ms = result.readings[-1].ts_ms if result.readings else now_ms()
        state.last_error = None
        if not state.online:
            state.online = True
            _log.info("device_online", bus=bus_id, device=device.id)
        return
    failure = result.error
    state.errors += 1
    state.consecutive_failures += 1
    state.last_error = failure
    if failure:
        kind = failure_kind(failure)
        state.error_kinds[kind] = state.error_kinds.get(kind, 0) + 1
    if state.online and state.consecutive_failures >= device.offline_after:
        state.online = False
        _log.warning("device_offline", bus=bus_id, device=device.id, reason=failure,
                     failures=state.consecutive_failures)


def failed_result(bus_id: str, device: DeviceConfig, reason: str) -> PollResult:
    readings = tuple(failed_points(device.id, device.points, now_ms(), reason))
    return PollResult(bus_id, device.id, readings, 0, False, reason)


@dataclass
class _QueuedWrite:
    unit: int
    address: int
    values: tuple[bool, ...]
    result: asyncio.Future[CoilWrite]


class BusTask:
    """One task per bus: polls its devices through their driver, hands results over.

    Whatever a driver raises becomes bad readings with the reason: the bus task, and
    with it every other device of the bus, never dies of one device's data.
    """

    def __init__(self, bus_id: str, devices: list[DeviceConfig], driver: FieldDriver,
                 health: BusHealth, sink: PollSink) -> None:
        self.bus_id = bus_id
        self.schedule = DeviceSchedule(devices)
        self.devices = self.schedule.devices  # one table of the bus's devices, not two
        self.driver = driver
        self.health = health
        self.sink = sink
        self._wake = Wake()
        self._stopping = False
        self._reconnects_seen = health.reconnects
        # A list, not a deque: writes are rare and few, and a deque allocates a block of 64
        # slots (about 0.6 KiB) up front, for each of a site's 200 buses.
        self._writes: list[_QueuedWrite] = []
        self._polled_since_write = True

    async def run(self) -> None:
        self.schedule.start(listening=self.driver.listening)
        try:
            while not self._stopping:
                self.health.last_cycle_monotonic = time.monotonic()
                if self._writes and (self._polled_since_write or not self._poll_due()):
                    await self._write_next()
                    continue
                upcoming = self.schedule.next()
                if upcoming is None:
                    await self._wait(time.monotonic() + HEARTBEAT_S)
                    continue
                device, due = upcoming
                wake = due
                reopen = self.driver.reopen_at
                if reopen is not None:
                    wake = min(wake, reopen)
                now = time.monotonic()
                if wake > now:
                    await self._wait(min(wake, now + HEARTBEAT_S))
                    continue
                if now < due:
                    # Woken to re-open the link, not to poll: a device in a long offline
                    # backoff must not hold back the reconnect.
                    await self.driver.reopen()
                    self._catch_up()
                    continue
                await self._poll_and_hand_over(device)
        finally:
            self._fail_writes("bus stopped")
            self.driver.close()

    def _wait(self, until: float) -> Awaitable[object]:
        """The sleep until ``until`` or a wake, for the caller to await: handed back, not
        awaited here, so a sleeping bus (most of its life) holds one frame less."""
        self._wake.clear()
        if self.driver.listening:
            return self.driver.listen(until, self._wake)
        return self._wake.sleep_until(until)

    async def poll_device(self, device: DeviceConfig) -> PollResult:
        """Poll one device now and record it in the health figures."""
        try:
            result = await self.driver.poll(device)
        except Exception as exc:
            _log.exception("poll_unexpected_error", bus=self.bus_id, device=device.id)
            result = failed_result(self.bus_id, device, f"internal_error: {exc}")
        record_poll(self.bus_id, device, self.health.devices[device.id], result)
        self._polled_since_write = True
        return result

    async def _poll_and_hand_over(self, device: DeviceConfig) -> None:
        started = time.monotonic()
        result = await self.poll_device(device)
        self.schedule.reschedule(device, self.health.devices[device.id], started)
        self._catch_up()
        if self.schedule.round_pending():
            # More devices of this round are due: the store may wait for them, to commit
            # the round at once (edge/pipeline.py).
            result = dataclasses.replace(result, mid_round=True)
        await self.sink(result)
        self.health.cycles += 1

    # -- relay modules ----------------------------------------------------------------------

    async def write_coils(self, unit: int, address: int, values: Sequence[bool]) -> CoilWrite:
        """Switch coils of a relay module on this bus between two device polls; the
        result says whether the read-back matched. Never raises for a failure."""
        wanted = tuple(bool(v) for v in values)
        if not hasattr(self.driver, "write_coils"):
            return self._refused(unit, address, wanted, "this bus type cannot write coils")
        if self._stopping:
            return self._refused(unit, address, wanted, "bus stopped")
        result: asyncio.Future[CoilWrite] = asyncio.get_running_loop().create_future()
        self._writes.append(_QueuedWrite(unit, address, wanted, result))
        self._wake.set()
        return await result

    def _poll_due(self) -> bool:
        upcoming = self.schedule.next()
        return upcoming is not None and upcoming[1] <= time.monotonic()

    async def _write_next(self) -> None:
        queued = self._writes.pop(0)
        if queued.result.done():  # the caller gave up waiting
            return
        writer = cast(CoilWriter, self.driver)  # checked when the write was queued
        try:
            outcome = await writer.write_coils(queued.unit, queued.address, queued.values)
        except Exception as exc:
            _log.exception("coil_write_unexpected_error", bus=self.bus_id, unit=queued.unit)
            outcome = self._refused(queued.unit, queued.address, queued.values,
                                    f"internal_error: {exc}")
        self._polled_since_write = False
        if not queued.result.done():
            queued.result.set_result(outcome)

    def _fail_writes(self, reason: str) -> None:
        while self._writes:
            queued = self._writes.pop(0)
            if not queued.result.done():
                queued.result.set_result(self._refused(queued.unit, queued.address,
                                                       queued.values, reason))

    def _refused(self, unit: int, address: int, values: tuple[bool, ...],
                 reason: str) -> CoilWrite:
        return CoilWrite(self.bus_id, unit, address, values, False, None, reason, 0.0)

    def _catch_up(self) -> None:
        """After the link came back, the devices the outage took down are polled now,
        not at the end of the backoff they accumulated while it was gone."""
        if self.health.reconnects == self._reconnects_seen:
            return
        self._reconnects_seen = self.health.reconnects
        self.schedule.all_now(d for d, s in self.health.devices.items()
                              if s.consecutive_failures)
        self._wake.set()

    def poll_now(self) -> None:
        """Make every device of the bus due now (the ``inspect`` command)."""
        self.schedule.all_now()
        self._wake.set()

    def stop(self) -> None:
        """Finish the current device poll, then return from ``run``."""
        self._stopping = True
        self._wake.set()
