"""Handing the C heap's free pages back to the kernel after a burst of short-lived memory.

Two pieces of the daemon's work allocate a lot for a moment and free it all: a fold of
history (edge/historyfold.py: a zlib compressor of ~18 KB for every device, 3.6 MB at
200 devices, while the fold runs) and a reload, which unpickles the new settings beside
the running ones (or, where its own process cannot answer, parses the site file in place:
2.6 MiB of YAML nodes and pydantic's intermediate values at 200 devices). glibc's
``free`` gives memory back only from the top of a heap; anything long-lived allocated
after the burst began (a page of SQLite's cache, a reading's buffer) pins what lies
below it, so the daemon kept the burst's size in RSS for good: 3 MiB more after the
first fold at 200 devices × 10 points (docs/performance.md). ``malloc_trim(0)`` returns
every free page of every arena, wherever it lies.
"""

from __future__ import annotations

import functools
import gc
from collections.abc import Callable

# The cyclic collector's first threshold in the daemon (CPython's own is 700): how many
# more container objects allocated than freed before a young collection (tune_collector).
COLLECTOR_THRESHOLD = 10_000


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        # ctypes is loaded here, not at import: only where the burst happens. CDLL(None)
        # is the process's own symbols, libc's among them, with no search for a file.
        import ctypes

        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
        return trim
    except (ImportError, OSError, AttributeError):
        return None  # not glibc (musl has no malloc_trim): nothing to give back this way


def give_back_free_memory() -> bool:
    """Return the C heap's free pages to the kernel; False where the C library cannot.

    Costs a walk of the heap's free lists (about a millisecond): call it after a burst,
    not on a timer. Safe from any thread: glibc locks each arena while it trims it.
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


def tune_collector() -> None:
    """Let the cyclic collector run when there is likely something to collect.

    The daemon's garbage is freed by reference counting: over 30 s of a steady 200 x 10
    site the collector found nothing to collect, yet took 10 % of the process's CPU. A
    round's readings, polls and futures live until the window's commit, so CPython's
    700 net allocations came seven times a second; what survived those young
    collections was promoted, and every ~15 s a full collection walked all ~65,000 of
    the daemon's objects (17-27 ms each). At 10,000 no collection ran in those 30 s
    (docs/performance.md, "The cyclic collector"). Cyclic garbage is still collected, at
    most 10,000 container objects after it was made (a few MiB at the worst; with every
    device stopped for a minute the RSS was the same). The older generations' thresholds
    stay as they are.
    """
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(COLLECTOR_THRESHOLD, middle, oldest)
