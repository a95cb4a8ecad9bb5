"""The device schedule shared by every poller."""

from __future__ import annotations

import time

from drivers.bus import DeviceHealth
from drivers.bustask import MAX_BACKOFF_S, DeviceSchedule
from drivers.devices import DeviceConfig


def test_backoff_of_a_device_offline_for_days_stays_bounded() -> None:
    device = DeviceConfig.model_validate({
        "id": "dead", "bus": "lan", "poll_interval_s": 10, "offline_after": 3,
        "points": [{"id": "p", "register": {"table": "holding", "address": 0}}]})
    schedule = DeviceSchedule([device])
    schedule.start()
    state = DeviceHealth(online=False)
    for failures in (4, 10, 1027, 100_000):  # 2 ** 1024 would overflow a float
        state.consecutive_failures = failures
        before = schedule.due["dead"]
        schedule.reschedule(device, state)
        # Monotonic times near 4,000 s lose the last bits of 300.0 in the subtraction.
        assert schedule.due["dead"] - before <= MAX_BACKOFF_S + 1e-6


def test_a_device_asked_for_while_it_is_polled_is_polled_again_at_once() -> None:
    device = DeviceConfig.model_validate({
        "id": "level-1", "bus": "lan", "poll_interval_s": 60,
        "points": [{"id": "p", "register": {"table": "holding", "address": 0}}]})
    schedule = DeviceSchedule([device])
    schedule.start()
    state = DeviceHealth()
    started = time.monotonic()
    schedule.all_now()  # asked for before the poll began: that poll answers it
    schedule.reschedule(device, state, time.monotonic())
    # Off the grid (the start, the ask): back on it at least half an interval on.
    assert schedule.due["level-1"] >= started + 29
    polling = time.monotonic()
    schedule.all_now()  # asked for while a poll ran: its readings may predate the ask
    schedule.reschedule(device, state, polling)
    assert schedule.due["level-1"] <= time.monotonic()
    schedule.reschedule(device, state, time.monotonic())  # that poll answered it
    assert schedule.due["level-1"] >= time.monotonic() + 29
