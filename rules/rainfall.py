"""Rainfall accumulation: window sums, the rainfall day, events and intensity.

Models the rainfall practice of the reference (``/work/shared/domain/reservoir.md``):

* §2.3 window sums over 1, 3, 6, 12 and 24 h on half-open windows (t − W, t], each
  increment stamped at the END of its counting interval, so an increment stamped exactly
  at t − W is outside the window (:class:`RainfallWindows`);
* §2.3 the rainfall day 08:00–08:00 Beijing time (:func:`rainfall_day_bounds`,
  :class:`RainfallDay`), reported with its start and end because the date label varies;
* §2.3 intensity as the 5-min sum × 12 (:func:`intensity_mm_per_h`) and the maximum
  1-h sum of the day;
* §2.3 event totals ended by a configurable dry gap (:class:`RainfallEvents`; no
  standard gap exists, so it is a parameter);
* §2.3/§4 the CMA rainstorm signals applied to observed sums (:func:`rainstorm_signal`).

Everything is clock-free: times are epoch milliseconds passed in by the caller.
Amounts are held as integer micrometres (0.001 mm) so that sums are exact: 250 tips of
0.2 mm make exactly 50.0 mm, and a "≥ 50 mm" signal cannot be missed by binary rounding.
"""

from __future__ import annotations

import math
import operator
from bisect import bisect_right, insort
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

__all__ = [
    "CMA_RAINSTORM_SIGNALS",
    "DEFAULT_WINDOWS_S",
    "SHORT_DURATION_HEAVY_RAIN",
    "DailyRainfall",
    "EventUpdate",
    "RainfallDay",
    "RainfallEvent",
    "RainfallEvents",
    "RainfallWindows",
    "intensity_mm_per_h",
    "rainfall_day_bounds",
    "rainstorm_signal",
]

HOUR_S = 3600
DEFAULT_WINDOWS_S: tuple[int, ...] = (1 * HOUR_S, 3 * HOUR_S, 6 * HOUR_S, 12 * HOUR_S, 24 * HOUR_S)
"""The window lengths of §2.3, in seconds."""

RainstormSignal = Literal["red", "orange", "yellow", "blue"]

CMA_RAINSTORM_SIGNALS: tuple[tuple[RainstormSignal, int, float], ...] = (
    ("red", 3 * HOUR_S, 100.0),
    ("orange", 3 * HOUR_S, 50.0),
    ("yellow", 6 * HOUR_S, 50.0),
    ("blue", 12 * HOUR_S, 50.0),
)
"""CMA rainstorm signals (§2.3 [S18]) as (colour, window s, mm reached), most severe first.

CMA issues them on forecasts; a gateway applies them to observed sums.
"""

SHORT_DURATION_HEAVY_RAIN: tuple[int, float] = (1 * HOUR_S, 20.0)
"""Short-duration heavy rain (短时强降水): 1 h ≥ 20 mm (§2.3 [S34])."""

_UM_PER_MM = 1000
_MS_PER_S = 1000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _to_um(mm: float) -> int:
    """Validate an increment and convert it to integer micrometres."""
    if isinstance(mm, bool) or not math.isfinite(mm) or mm < 0.0:
        raise ValueError(f"rainfall increment must be a finite, non-negative mm value: {mm!r}")
    return round(mm * _UM_PER_MM)


def _to_mm(um: int) -> float:
    return um / _UM_PER_MM


def _stamp(ts_ms: int) -> int:
    # operator.index rejects floats: a fractional epoch-ms stamp is a caller's unit error.
    return operator.index(ts_ms)


def intensity_mm_per_h(interval_mm: float, interval_s: int = 300) -> float:
    """Rain intensity in mm/h from the sum over one counting interval.

    With the default 5-min interval this is the 5-min sum × 12 (§2.3).
    """
    if interval_s <= 0:
        raise ValueError("interval_s must be positive")
    return interval_mm * HOUR_S / interval_s


class RainfallWindows:
    """Sliding window sums over half-open windows (t − W, t] (§2.3).

    Feed it increments with :meth:`add`, each stamped at the end of its counting interval
    (a 5-min count or a per-poll counter difference), and ask :meth:`sums` at any time.

    * Out of order: an increment is inserted at its place in time, as long as it can
      still fall in a window ending at or after the newest stamp seen; an older one is
      dropped and :meth:`add` returns False.
    * Same stamp twice: both increments count. Each :meth:`add` is a distinct increment;
      a counter polled twice in one millisecond yields 0 the second time, so nothing is
      counted twice, and losing rain is the worse error for a rainstorm alarm.
    * Memory: increments stamped at or before (newest stamp − longest window) are
      dropped and zero increments are not stored, so at most one longest window of
      increments is held. Sums are therefore exact for any ``at_ms`` at or after the
      newest stamp; an earlier instant may miss increments already dropped.
    """

    def __init__(self, windows_s: Sequence[int] = DEFAULT_WINDOWS_S) -> None:
        windows = tuple(sorted({operator.index(w) for w in windows_s}))
        if not windows:
            raise ValueError("at least one window is required")
        if windows[0] <= 0:
            raise ValueError(f"window lengths must be positive seconds: {windows}")
        self._windows = windows
        self._horizon_ms = windows[-1] * _MS_PER_S
        self._stamps: list[int] = []
        self._amounts_um: list[int] = []
        self._newest_ms: int | None = None

    @property
    def windows_s(self) -> tuple[int, ...]:
        """The window lengths in seconds, ascending."""
        return self._windows

    @property
    def newest_ms(self) -> int | None:
        """The newest stamp added, or None before the first increment."""
        return self._newest_ms

    def __len__(self) -> int:
        """Number of non-zero increments held."""
        return len(self._stamps)

    def add(self, ts_ms: int, mm: float) -> bool:
        """Add ``mm`` fallen in the interval ending at ``ts_ms``; False if too old to count."""
        ts = _stamp(ts_ms)
        um = _to_um(mm)
        newest = ts if self._newest_ms is None else max(self._newest_ms, ts)
        self._newest_ms = newest
        cutoff = newest - self._horizon_ms
        if ts <= cutoff:
            return False
        if um > 0:
            # Insert after equal stamps so that equal-stamp increments keep arrival order.
            index = bisect_right(self._stamps, ts)
            self._stamps.insert(index, ts)
            self._amounts_um.insert(index, um)
        stale = bisect_right(self._stamps, cutoff)
        if stale:
            del self._stamps[:stale]
            del self._amounts_um[:stale]
        return True

    def sums(self, at_ms: int) -> dict[int, float]:
        """Rainfall in mm over (at − W, at] for each window W (seconds → mm)."""
        at = _stamp(at_ms)
        end = bisect_right(self._stamps, at)
        result: dict[int, float] = {}
        for window in self._windows:
            start = bisect_right(self._stamps, at - window * _MS_PER_S, 0, end)
            result[window] = _to_mm(sum(self._amounts_um[start:end]))
        return result

    def clear(self) -> None:
        """Forget all increments, e.g. after the gauge was replaced."""
        self._stamps.clear()
        self._amounts_um.clear()
        self._newest_ms = None


def rainstorm_signal(
    sums_mm: Mapping[int, float],
    signals: Sequence[tuple[RainstormSignal, int, float]] = CMA_RAINSTORM_SIGNALS,
) -> RainstormSignal | None:
    """The most severe rainstorm signal whose window sum is reached (≥), or None.

    ``sums_mm`` maps window seconds to mm, as :meth:`RainfallWindows.sums` returns; it
    must contain every window the signals use. ``signals`` is ordered most severe first.
    """
    for colour, window_s, threshold_mm in signals:
        if window_s not in sums_mm:
            raise ValueError(f"no {window_s} s window sum for the {colour} signal")
        if sums_mm[window_s] >= threshold_mm:
            return colour
    return None


# --- the rainfall day ----------------------------------------------------------------


def _epoch_ms(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def _local(ts_ms: int, zone: ZoneInfo) -> datetime:
    # Split into whole seconds and milliseconds: a float division would blur the
    # millisecond that decides which side of 08:00 a stamp falls.
    seconds, millis = divmod(ts_ms, _MS_PER_S)
    return datetime.fromtimestamp(seconds, zone) + timedelta(milliseconds=millis)


def _check_start_hour(start_hour: int) -> None:
    if not 0 <= start_hour <= 23:
        raise ValueError(f"start_hour must be 0–23, got {start_hour}")


def rainfall_day_bounds(
    ts_ms: int, tz: str = "Asia/Shanghai", start_hour: int = 8
) -> tuple[int, int]:
    """The rainfall day (start, end] containing ``ts_ms``, as epoch ms (§2.3).

    The day runs from ``start_hour``:00 local time to the same hour the next day. An
    increment stamped exactly at 08:00 closes the interval that ends at 08:00, so it
    belongs to the day *ending* at 08:00; 08:00:00.001 starts the next day.
    """
    _check_start_hour(start_hour)
    return _day_bounds(_stamp(ts_ms), ZoneInfo(tz), start_hour)


def _day_bounds(ts: int, zone: ZoneInfo, start_hour: int) -> tuple[int, int]:
    local = _local(ts, zone)
    end_date = local.date()
    if local.replace(tzinfo=None) > datetime.combine(end_date, time(start_hour)):
        end_date += timedelta(days=1)
    # Build both bounds from calendar dates so that a day shortened or lengthened by a
    # daylight-saving change in ``zone`` still runs from start_hour to start_hour.
    end = datetime(end_date.year, end_date.month, end_date.day, start_hour, tzinfo=zone)
    start_date = end_date - timedelta(days=1)
    start = datetime(start_date.year, start_date.month, start_date.day, start_hour, tzinfo=zone)
    return _epoch_ms(start), _epoch_ms(end)


@dataclass(frozen=True)
class DailyRainfall:
    """Rainfall of one rainfall day (start, end], epoch ms.

    ``max_1h_mm`` is the largest sum over a sliding hour (t − 1 h, t] with t in the day;
    such an hour may reach back across the day's start.
    """

    start_ms: int
    end_ms: int
    total_mm: float
    max_1h_mm: float


class RainfallDay:
    """Accumulates the 08:00–08:00 rainfall day and rolls over to the next (§2.3).

    :meth:`add` opens the day of the first increment and, when an increment belongs to a
    later day, closes the current one and returns its :class:`DailyRainfall`. A day with
    rain data but no rain closes with 0 mm; days with no data at all in between are not
    reported, because unknown is not zero. :meth:`roll` closes the day from the clock
    once all increments up to its end are in, for the 08:00 report.

    An increment for a day already closed cannot change the reported total; it is
    counted in :attr:`late_mm` instead and still counts toward the current day's maximum
    1-h sum where its hour overlaps the day.
    """

    def __init__(self, tz: str = "Asia/Shanghai", start_hour: int = 8) -> None:
        _check_start_hour(start_hour)
        self._zone = ZoneInfo(tz)
        self._start_hour = start_hour
        self._bounds: tuple[int, int] | None = None
        # Increments stamped in (day start − 1 h, day end], sorted, for the 1-h maximum.
        self._increments: list[tuple[int, int]] = []
        self._late_um = 0

    @property
    def late_mm(self) -> float:
        """Rain that arrived after its day had been closed."""
        return _to_mm(self._late_um)

    @property
    def current(self) -> DailyRainfall | None:
        """The day in progress so far, or None before any increment."""
        if self._bounds is None:
            return None
        return self._summary(self._bounds)

    def add(self, ts_ms: int, mm: float) -> DailyRainfall | None:
        """Add an increment; return the day it closed, if it belongs to a later day."""
        ts = _stamp(ts_ms)
        um = _to_um(mm)
        closed: DailyRainfall | None = None
        if self._bounds is None:
            self._open(ts)
        elif ts > self._bounds[1]:
            closed = self._close()
            self._open(ts)
        assert self._bounds is not None
        start = self._bounds[0]
        if ts <= start:
            self._late_um += um
            if ts <= start - HOUR_S * _MS_PER_S:
                return closed
        if um > 0:
            insort(self._increments, (ts, um))
        return closed

    def roll(self, complete_through_ms: int) -> DailyRainfall | None:
        """Close the current day if it ends at or before ``complete_through_ms``.

        Call it once every increment stamped up to ``complete_through_ms`` has been
        added, e.g. right after the 08:00 poll with its stamp. The next day is opened.
        """
        at = _stamp(complete_through_ms)
        if self._bounds is None or self._bounds[1] > at:
            return None
        closed = self._close()
        # The stamp just after ``at`` picks the day that follows the completed data.
        self._open(at + 1)
        return closed

    def _open(self, ts: int) -> None:
        self._bounds = _day_bounds(ts, self._zone, self._start_hour)
        horizon = self._bounds[0] - HOUR_S * _MS_PER_S
        self._increments = [item for item in self._increments if item[0] > horizon]

    def _close(self) -> DailyRainfall:
        assert self._bounds is not None
        return self._summary(self._bounds)

    def _summary(self, bounds: tuple[int, int]) -> DailyRainfall:
        start, end = bounds
        total = 0
        best = 0
        tail = 0
        running = 0
        hour_ms = HOUR_S * _MS_PER_S
        # A sliding-hour sum only rises at an increment's stamp, so its maximum over the
        # day is reached at one of the day's stamps; a two-pointer sweep finds it. With
        # equal stamps the partial sums before the last one are smaller, so harmless.
        for ts, um in self._increments:
            running += um
            while self._increments[tail][0] <= ts - hour_ms:
                running -= self._increments[tail][1]
                tail += 1
            if start < ts <= end:
                total += um
                best = max(best, running)
        return DailyRainfall(start, end, _to_mm(total), _to_mm(best))


# --- rainfall events -----------------------------------------------------------------


@dataclass(frozen=True)
class RainfallEvent:
    """One rainfall event: stamps of its first and last wet increments, and its total.

    ``start_ms`` is the end of the first counting interval with rain, so rain began at
    most one interval earlier.
    """

    start_ms: int
    last_rain_ms: int
    total_mm: float


@dataclass(frozen=True)
class EventUpdate:
    """State after an update: the open event, if any, and the event that just ended."""

    current: RainfallEvent | None
    ended: RainfallEvent | None


class RainfallEvents:
    """Splits rainfall into events separated by a dry gap (§2.3).

    An event opens with the first increment carrying rain and ends once more than
    ``dry_gap_s`` has passed since its last wet increment's stamp with no further rain.
    Time passes through :meth:`add` (dry increments count) or :meth:`advance`, so a
    caller that stops receiving increments still sees the event end.

    A late increment (stamped before the newest stamp seen) cannot open or end an event,
    because those decisions were already made: its rain is added to the open event if it
    falls no earlier than ``dry_gap_s`` before the event's start (moving the start back),
    and otherwise counted in :attr:`late_mm`.
    """

    def __init__(self, dry_gap_s: int) -> None:
        gap = operator.index(dry_gap_s)
        if gap <= 0:
            raise ValueError(f"dry_gap_s must be positive, got {dry_gap_s}")
        self._gap_ms = gap * _MS_PER_S
        self._newest_ms: int | None = None
        self._start_ms = 0
        self._last_rain_ms = 0
        self._total_um: int | None = None
        self._late_um = 0

    @property
    def current(self) -> RainfallEvent | None:
        """The open event, or None between events."""
        if self._total_um is None:
            return None
        return RainfallEvent(self._start_ms, self._last_rain_ms, _to_mm(self._total_um))

    @property
    def late_mm(self) -> float:
        """Late rain that could not be assigned to an open event."""
        return _to_mm(self._late_um)

    def add(self, ts_ms: int, mm: float) -> EventUpdate:
        """Add the increment of the interval ending at ``ts_ms``."""
        ts = _stamp(ts_ms)
        um = _to_um(mm)
        late = self._newest_ms is not None and ts < self._newest_ms
        ended = None if late else self._expire(ts)
        if um > 0:
            if late:
                self._add_late(ts, um)
            elif self._total_um is None:
                self._start_ms, self._last_rain_ms, self._total_um = ts, ts, um
            else:
                self._last_rain_ms = ts
                self._total_um += um
        if not late:
            self._newest_ms = ts
        return EventUpdate(self.current, ended)

    def advance(self, now_ms: int) -> EventUpdate:
        """Let time pass to ``now_ms`` without rain; ends the event after the dry gap."""
        now = _stamp(now_ms)
        ended = None
        if self._newest_ms is None or now >= self._newest_ms:
            ended = self._expire(now)
            self._newest_ms = now
        return EventUpdate(self.current, ended)

    def _expire(self, now: int) -> RainfallEvent | None:
        if self._total_um is None or now - self._last_rain_ms <= self._gap_ms:
            return None
        ended = self.current
        self._total_um = None
        return ended

    def _add_late(self, ts: int, um: int) -> None:
        if self._total_um is not None and ts >= self._start_ms - self._gap_ms:
            self._start_ms = min(self._start_ms, ts)
            self._total_um += um
        else:
            self._late_um += um
