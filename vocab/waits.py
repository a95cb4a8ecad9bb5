"""Waiting with a time limit without losing a stop.

``asyncio.wait_for`` in Python 3.11 returns the inner result when the waiting task is
cancelled in the same loop iteration as that result arrives, and the cancellation is lost
(fixed in 3.12, python/cpython#86296). A task stopped with one ``cancel()`` then runs on:
a gateway stop hung for 88 s in the SL 651 tests because a centre's confirmation arrived
as its link was cancelled. ``asyncio.timeout`` (3.11) cancels the waiting task itself and
never swallows a cancellation that came from elsewhere, so the daemon uses it, through
these helpers, everywhere it waits with a limit (tests/test_waits.py keeps ``wait_for``
out of the daemon's packages).
"""

from __future__ import annotations

import asyncio
from typing import Any


class Wake:
    """A sleep until a moment that another part of the task can cut short.

    Each bus task sleeps between its polls, most of its life: with an ``asyncio.Event``
    and ``asyncio.timeout`` that sleep held an event with its deque of waiters, a timeout
    context and five suspended coroutines, about 2 KiB for each of a reservoir's 200
    one-device buses (docs/performance.md, "What a bus costs"). This holds a flag; a sleep
    holds one future and one timer. Not thread-safe, as an ``asyncio.Event`` is not.
    """

    __slots__ = ("_set", "_sleepers")

    def __init__(self) -> None:
        self._set = False
        self._sleepers: list[asyncio.Future[bool]] = []

    def set(self) -> None:
        self._set = True
        for sleeper in self._sleepers:
            if not sleeper.done():
                sleeper.set_result(True)

    def clear(self) -> None:
        self._set = False

    def is_set(self) -> bool:
        return self._set

    async def sleep_until(self, until: float) -> bool:
        """Until ``until`` (``time.monotonic()``, the loop's clock) or until ``set``;
        True if set. A cancellation of the sleeping task propagates as usual."""
        if self._set:
            return True
        loop = asyncio.get_running_loop()
        sleeper: asyncio.Future[bool] = loop.create_future()
        timer = loop.call_at(until, _time_up, sleeper)
        self._sleepers.append(sleeper)
        try:
            return await sleeper
        finally:
            timer.cancel()
            self._sleepers.remove(sleeper)


def _time_up(sleeper: asyncio.Future[bool]) -> None:
    if not sleeper.done():
        sleeper.set_result(False)


async def wait_set(event: asyncio.Event, timeout_s: float | None) -> bool:
    """Until ``event`` is set or ``timeout_s`` passed (None: no limit); True if set."""
    try:
        async with asyncio.timeout(timeout_s):
            await event.wait()
    except TimeoutError:
        return False
    return True


async def stop_tasks(*tasks: asyncio.Task[Any], patience_s: float = 1.0) -> None:
    """Cancel the tasks and return when every one has ended.

    A task that runs on past its cancel (a library awaiting ``asyncio.wait_for`` at the
    wrong moment swallows it) is cancelled again every ``patience_s``, so a stop cannot
    hang on it. Unlike ``suppress(CancelledError)`` around an await, a cancellation of
    the caller itself still propagates. The tasks' own exceptions are retrieved (they were
    logged where they happened), so none is reported later as never retrieved.
    """
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=patience_s)
    for task in tasks:
        if not task.cancelled():
            task.exception()
