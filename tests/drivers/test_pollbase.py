"""The device schedule shared by every poller."""

from __future__ import annotations

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
