"""The boundary-aligned poll schedule: the pure boundary helpers, the schedule's due times,
and a real bus task polling devices of one interval in one burst per interval."""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from drivers.bus import DeviceHealth
from drivers.bustask import DeviceSchedule, boundary_after, next_boundary, schedule_grid
from drivers.devices import DeviceConfig
from drivers.modbus import ModbusTcpBus
from drivers.registry import make_poller
from tests.drivers.modbus_server import FieldDevice, TcpFieldBus
from vocab.model import PollResult

times = st.floats(min_value=0.0, max_value=1e7, allow_nan=False)
intervals = st.floats(min_value=0.05, max_value=3600.0, allow_nan=False)


def on_grid(t: float, interval: float, offset: float) -> bool:
    k = (t - offset) / interval
    return math.isclose(k, round(k), abs_tol=1e-6)


@settings(max_examples=300, deadline=None)
@given(times, intervals, times)
# 0.2 - 3 * 0.05 rounds to a few ulps below 0.05: that boundary is "now", not missed.
@example(now=0.05, interval=0.05, offset=0.2)
def test_next_boundary_is_the_first_boundary_at_or_after_now(
        now: float, interval: float, offset: float) -> None:
    boundary = next_boundary(now, interval, offset)
    assert boundary >= now
    assert boundary - interval < now, "never a whole interval late"
    assert on_grid(boundary, interval, offset)


@settings(max_examples=300, deadline=None)
@given(times, intervals, times)
def test_boundary_after_is_strictly_after_now_and_at_most_an_interval_on(
        now: float, interval: float, offset: float) -> None:
    boundary = boundary_after(now, interval, offset)
    assert now < boundary <= now + interval * (1 + 1e-9)
    assert on_grid(boundary, interval, offset)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=-1000, max_value=1000), st.sampled_from([0.1, 0.25, 1.0, 7.0]),
       times)
def test_a_boundary_is_its_own_next_boundary_and_not_its_own_boundary_after(
        k: int, interval: float, offset: float) -> None:
    boundary = next_boundary(offset + k * interval, interval, offset)
    assert math.isclose(boundary, offset + k * interval, abs_tol=1e-6)
    assert boundary_after(boundary, interval, offset) > boundary


def test_devices_in_one_interval_share_one_boundary_whenever_each_was_polled() -> None:
    # Polls that ended anywhere in the same interval all come due at its end together.
    assert {boundary_after(t, 1.0, 0.3) for t in (5.3, 5.31, 5.9, 6.29)} == {6.3}
    # A device that fell behind goes to the next boundary after now, not a missed one.
    assert boundary_after(9.05, 1.0, 0.3) == 9.3


def config(unit: int, interval: float, **extra: Any) -> DeviceConfig:
    return DeviceConfig.model_validate({
        "id": f"dev-{unit}", "bus": "lan", "unit": unit, "poll_interval_s": interval,
        "points": [{"id": "p", "register": {"table": "holding", "address": 0,
                                             "type": "uint16"}}], **extra})


def test_the_schedule_puts_polled_devices_on_boundaries_and_backs_off_on_them() -> None:
    devices = [config(1, 1.0), config(2, 1.0), config(3, 2.0, offline_after=1)]
    schedule = DeviceSchedule(devices)
    schedule.start()
    offset, start = schedule.offset, schedule.due["dev-1"]
    assert set(schedule.due.values()) == {start}, "everyone due at once at the start"
    online, offline = DeviceHealth(), DeviceHealth()
    offline.online, offline.consecutive_failures = False, 4
    for device in devices:
        schedule.reschedule(device, offline if device.id == "dev-3" else online, start)
    # The start-up poll was off the grid: the devices join it at least half an interval on.
    joined = schedule.due["dev-1"]
    assert joined == schedule.due["dev-2"] == boundary_after(start + 0.5, 1.0, offset)
    assert start + 0.5 < joined <= start + 1.5 and on_grid(joined, 1.0, offset)
    # 4 failures, offline after 1: backed off 2 ** 3 intervals, and on a boundary.
    wait = schedule.due["dev-3"] - start
    assert 14.0 < wait <= 16.0 + 1e-3 and on_grid(schedule.due["dev-3"], 2.0, offset)
    assert not schedule.round_pending()


def test_devices_made_due_together_join_the_grid_together() -> None:
    # The start-up round's polls end one after another; a grid boundary that falls half an
    # interval after the first began, but before the last, must not split them over two
    # rounds (found by the burst test below, on a boundary 0.26 s after the start).
    devices = [config(u, 0.5) for u in (1, 2, 3)]
    schedule = DeviceSchedule(devices)
    schedule.start()
    start = time.monotonic() - 5.0  # the bus started 5 s ago
    schedule.off_grid = dict.fromkeys(schedule.off_grid, start)
    schedule.offset = start + 0.26
    for n, device in enumerate(devices):
        schedule.reschedule(device, DeviceHealth(), start + 0.02 * n)
    assert {schedule.due[d.id] for d in devices} == {start + 0.26}
    # An inspection 3 s ago: the same, from when it was asked.
    schedule.all_now()
    asked = time.monotonic() - 3.0
    schedule.asked = dict.fromkeys(schedule.asked, asked)
    schedule.off_grid = dict.fromkeys(schedule.off_grid, asked)
    schedule.offset = asked + 0.27
    for n, device in enumerate(devices):
        schedule.reschedule(device, DeviceHealth(), asked + 0.001 + 0.02 * n)
    assert len({schedule.due[d.id] for d in devices}) == 1
    assert math.isclose(schedule.due["dev-1"], asked + 0.27)


def test_every_bus_polls_on_one_grid_on_the_wall_clock_s_multiples_of_the_interval() -> None:
    # Two buses started apart (a level gauge on its own port, an RS-485 line): their
    # rounds of one interval start at the same instant, so the store commits them as one.
    line = DeviceSchedule([config(1, 1.0)])
    line.start()
    time.sleep(0.3)
    gauge = DeviceSchedule([config(2, 1.0)])
    gauge.start()
    assert line.offset == gauge.offset == schedule_grid()
    for schedule in (line, gauge):
        device = next(iter(schedule.devices.values()))
        schedule.reschedule(device, DeviceHealth(), schedule.due[device.id])
    apart = gauge.due["dev-2"] - line.due["dev-1"]
    assert math.isclose(apart, round(apart), abs_tol=1e-6), "the same phase: whole seconds"
    # The grid's origin is midnight UTC on the wall clock (within the clocks' drift).
    origin = (time.time() - (time.monotonic() - schedule_grid())) % 86_400.0
    assert min(origin, 86_400.0 - origin) < 0.05


def test_a_late_poll_is_polled_once_on_the_next_boundary_never_in_a_burst() -> None:
    device = config(1, 1.0)
    schedule = DeviceSchedule([device])
    schedule.start()
    offset = schedule.offset = time.monotonic() - 10.0  # the grid began 10 s ago
    schedule.off_grid["dev-1"] = offset - 0.2  # and the bus 0.2 s before it
    schedule.reschedule(device, DeviceHealth(), offset - 0.2)  # the start-up poll
    assert math.isclose(schedule.due["dev-1"], offset + 1.0), "joined half an interval on"
    # Began 1.6 intervals late (a saturated bus): boundaries 8 and 9 are not caught up.
    schedule.reschedule(device, DeviceHealth(), offset + 9.6)
    assert math.isclose(schedule.due["dev-1"], offset + 10.0)
    # Began on time but ran past the next boundary (the loop was busy): that boundary
    # came while the poll ran, so the device is due at once, one poll late, not lost.
    schedule.reschedule(device, DeviceHealth(), offset + 8.95)
    assert math.isclose(schedule.due["dev-1"], offset + 9.0)
    assert schedule.round_pending()


def test_a_listening_device_keeps_its_own_phase() -> None:
    device = config(1, 1.0)
    schedule = DeviceSchedule([device])
    schedule.start(listening=["dev-1"])
    first = schedule.due["dev-1"]
    assert first > schedule.offset
    schedule.reschedule(device, DeviceHealth(), first)
    assert schedule.due["dev-1"] == first + 1.0
    schedule.due["dev-1"] = 0.0  # long overdue: due now, not the same instant a round is
    assert not schedule.round_pending(), "a listening device is no round of the bus"


def test_devices_of_one_interval_are_polled_in_one_burst_per_interval() -> None:
    """Against a real Modbus TCP server: five devices at 0.5 s, each slowed down so a
    poll takes ~20 ms; every round after the start-up one starts on the grid's boundary,
    polls the five one after another, and flags all but the last of them ``mid_round``."""
    interval, units = 0.5, (1, 2, 3, 4, 5)
    fields = [FieldDevice(unit=u, delay_s=0.02) for u in units]
    seen: list[tuple[float, PollResult]] = []

    async def sink(result: PollResult) -> None:
        seen.append((asyncio.get_running_loop().time(), result))

    async def scenario() -> float:
        async with TcpFieldBus(fields) as server:
            bus = ModbusTcpBus(id="lan", type="modbus_tcp", host="127.0.0.1",
                               port=server.port, timeout_s=0.5)
            poller = make_poller(bus, [config(u, interval) for u in units], sink)
            task = asyncio.create_task(poller.run())
            await asyncio.sleep(3.2)
            poller.stop()
            await task
            return poller.schedule.offset

    grid = asyncio.run(scenario())
    rounds = [seen[i:i + len(units)] for i in range(0, len(seen), len(units))]
    complete = [r for r in rounds if len(r) == len(units)]
    assert len(complete) >= 5, [(round(t, 3), r.device) for t, r in seen]
    starts = []
    for batch in complete:
        assert [r.device for _, r in batch] == [f"dev-{u}" for u in units]
        assert [r.mid_round for _, r in batch] == [True] * (len(units) - 1) + [False]
        assert all(r.ok for _, r in batch)
        # The round is one burst, well inside its interval.
        assert batch[-1][0] - batch[0][0] < interval * 0.8
        starts.append(batch[0][0])
    # The start-up round is off the grid; every later one begins one interval after the
    # one before, on the process's grid (its first poll ends ~20 ms after the boundary).
    on_grid_starts = starts[1:]
    gaps = [b - a for a, b in itertools.pairwise(on_grid_starts)]
    assert all(abs(gap - interval) < 0.15 for gap in gaps), gaps
    late = [(t - grid) % interval for t in on_grid_starts]
    assert all(lag < 0.15 for lag in late), late
