"""The PIN lock-out's state machine: per client, site-wide, expiry and reset."""

from __future__ import annotations

from edge.web.guard import PinGuard


class Clock:
    """Monotonic seconds the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_client_locked_after_n_failures_until_the_lock_ends() -> None:
    clock = Clock()
    guard = PinGuard(after=3, lock_s=600, site_after=100, clock=clock)
    assert [guard.failed("10.0.0.5") for _ in range(3)] == [2, 1, 0]
    assert guard.locked_for("10.0.0.5") == 600
    assert guard.locked_for("10.0.0.6") == 0  # another phone is not locked
    clock.now += 599
    assert guard.locked_for("10.0.0.5") == 1
    clock.now += 1
    assert guard.locked_for("10.0.0.5") == 0
    assert guard.failed("10.0.0.5") == 2  # counting starts again after the lock


def test_right_pin_and_time_forget_failures() -> None:
    clock = Clock()
    guard = PinGuard(after=3, lock_s=600, site_after=100, clock=clock)
    guard.failed("a")
    guard.failed("a")
    guard.succeeded("a")
    assert guard.failed("a") == 2
    clock.now += 601
    assert guard.failed("a") == 2  # the old failure is forgotten


def test_site_wide_lock_stops_address_hopping() -> None:
    clock = Clock()
    guard = PinGuard(after=3, lock_s=600, site_after=5, clock=clock)
    for client in ("a", "b", "c", "d"):
        assert guard.failed(client) == 2
    assert guard.failed("e") == 0
    assert guard.locked_for("someone-new") == 600
    assert guard.lockouts_total == 1 and guard.failures_total == 5
    clock.now += 600
    assert guard.locked_for("someone-new") == 0


def test_memory_bounded_by_client_count() -> None:
    guard = PinGuard(after=3, lock_s=600, site_after=10**6, clock=Clock(), max_clients=10)
    for index in range(1000):
        guard.failed(f"client-{index}")
    assert guard.tracked_clients == 10
