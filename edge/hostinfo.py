"""What the gateway can tell about the machine it runs on: disk, memory, CPU, clock.

A gateway with no RTC boots with a clock weeks behind (lessons.md); readings stamped then
are wrong, so the health topic says whether the kernel considers the clock synchronised
and whether it is before this release's date, which no correct clock can be.
"""

from __future__ import annotations

import contextlib
import functools
import os
import resource
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# No correct clock is earlier than the day this version was released.
RELEASE_EPOCH_MS = 1_795_392_000_000  # 2026-11-23T00:00:00Z

_TIME_ERROR = 5  # adjtimex(2): "clock not synchronized"
TIMESYNC_FLAG = "/run/systemd/timesync/synchronized"


def clock_synchronized() -> bool | None:
    """Whether NTP has set the clock; None where nobody can tell.

    systemd-timesyncd leaves a flag file when it has synchronised; otherwise the kernel
    is asked with a read-only adjtimex(2). (The hardened unit's ProtectClock= forbids even
    that call, hence the flag file first.)
    """
    if Path(TIMESYNC_FLAG).exists():
        return True
    adjtimex = _adjtimex()
    if adjtimex is None:
        return None
    import ctypes

    # struct timex is ~208 bytes; with modes = 0 (the zeroed first field) adjtimex only
    # reads, so a zeroed, larger buffer is enough and layout-independent.
    state = adjtimex(ctypes.create_string_buffer(512))
    if state < 0:
        return None
    return state != _TIME_ERROR


@functools.cache
def _adjtimex() -> Callable[[Any], int] | None:
    """libc's adjtimex(2), looked up once. ctypes (about 0.2 MiB) is loaded only where the
    flag file does not answer; ``CDLL(None)`` is the process's own symbols, libc's among
    them: ``ctypes.util.find_library`` runs ``ldconfig -p`` in a child process, which the
    health loop did at every interval on hosts without systemd-timesyncd."""
    try:
        import ctypes

        found: Callable[[Any], int] = ctypes.CDLL(None, use_errno=True).adjtimex
        return found
    except (ImportError, OSError, AttributeError):
        return None


def clock_before_release(now_ms: int) -> bool:
    return now_ms < RELEASE_EPOCH_MS


def rss_bytes() -> int:
    """Current resident memory (not the peak), from /proc where available."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@dataclass
class CpuMeter:
    """The daemon's own CPU use (% of one core) since the previous sample."""

    _wall: float = 0.0
    _cpu: float = 0.0

    def sample(self) -> float:
        wall, cpu = time.monotonic(), time.process_time()
        if not self._wall:
            self._wall, self._cpu = wall, cpu
            return 0.0
        used = (cpu - self._cpu) / max(wall - self._wall, 1e-6) * 100
        self._wall, self._cpu = wall, cpu
        return round(used, 2)


def disk_free_bytes(path: Path) -> int | None:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def store_size_bytes(db_path: Path) -> int:
    total = 0
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(OSError):
            total += os.stat(f"{db_path}{suffix}").st_size
    return total
