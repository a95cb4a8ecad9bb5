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
