"""Server-side SVG plots of one point: 24 h, 7 days or 30 days from the store.

The keeper's phone may have no network beyond the gateway, so the plot is drawn here as
SVG inside the page: no script, no chart library, nothing fetched at view time.

What is drawn:

* **The line** joins the point's *good* readings. Suspect readings are drawn as hollow
  amber dots, not joined; bad readings (and failed reads, value None) as red ticks under
  the plot. A point's readings are never invented: nothing is interpolated across a gap.
* **A gap** is where the line is broken: between two consecutive good readings more than
  ``GAP_INTERVALS`` (3) expected intervals apart (the device's poll interval; for points
  without one, 3 × the median spacing of the period's first good readings), or with a
  bad reading between them. Missing data at the start or the end of the period (up to
  now) is a gap too. Gaps wider than a pixel column are shaded, and counted.
  Three intervals follow the "offline after N missed polls" practice of the daemon
  (``offline_after`` defaults to 3): one or two late polls are jitter, three are an
  outage. A gap narrower than one pixel column is counted but cannot be drawn.
* **Decimation**: a 30-day plot of a 1-minute point has 43,200 readings for about 650
  pixel columns. Readings are bucketed per pixel column; a column with one or two good
  readings keeps them as they are, a column with more keeps its minimum and maximum in
  time order (min/max decimation), so spikes survive and the SVG holds at most two
  vertices per column and segment. Readings are fed page by page (``Decimator.feed``),
  so memory stays bounded by the column count, not by the period.
* **Limit lines**: the point's alarm limits (dashed, by severity) and, on the reservoir
  level, the site's characteristic levels (dotted). A line far outside the data is not
  allowed to squash the curve: it is named at the plot's edge as off scale.
* **Time axis** labels in the site's time zone (Beijing time for Chinese sites).

This module holds the data side (what to draw); edge/web/plotsvg.py draws it.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from vocab.model import Reading

__all__ = ["GAP_INTERVALS", "Decimator", "PlotLine", "Series"]

GAP_INTERVALS = 3
# A phone shows the plot about 380 px wide: with this viewBox its 12-unit text stays
# readable there, and the page caps the plot at 640 px on a laptop.
WIDTH = 480
HEIGHT = 280
MARGIN_LEFT = 50
MARGIN_RIGHT = 8
MARGIN_TOP = 16
MARGIN_BOTTOM = 40
COLUMNS = WIDTH - MARGIN_LEFT - MARGIN_RIGHT  # one bucket per pixel column
_SPACING_SAMPLE = 20

SEVERITY_COLOURS = {"warning": "#b8860b", "alarm": "#d2691e", "critical": "#c00000"}
LEVEL_COLOUR = "#1f5fa8"


@dataclass(frozen=True, slots=True)
class PlotLine:
    """A horizontal line: an alarm limit (``severity`` set) or a characteristic level."""

    value: float
    label: str
    severity: str | None = None


@dataclass
class _Bucket:
    column: int
    count: int = 0
    first: tuple[int, float] = (0, 0.0)
    last: tuple[int, float] = (0, 0.0)
    low: tuple[int, float] = (0, math.inf)
    high: tuple[int, float] = (0, -math.inf)

    def add(self, ts: int, value: float) -> None:
        if self.count == 0:
            self.first = (ts, value)
        self.last = (ts, value)
        if value < self.low[1]:
            self.low = (ts, value)
        if value > self.high[1]:
            self.high = (ts, value)
        self.count += 1

    def vertices(self) -> list[tuple[int, float]]:
        if self.count == 0:
            return []
        if self.count == 1:
            return [self.first]
        if self.count == 2:
            return [self.first, self.last]
        return sorted({self.low, self.high})


@dataclass
class Series:
    """What the decimator kept of a period: line segments, markers, gaps and counts."""

    from_ms: int
    to_ms: int
    gap_ms: int | None
    segments: list[list[tuple[int, float]]] = field(default_factory=list)
    suspect: list[tuple[int, float]] = field(default_factory=list)
    bad_columns: list[int] = field(default_factory=list)
    gaps: list[tuple[int, int]] = field(default_factory=list)  # drawn (wider than a column)
    gap_count: int = 0
    good: int = 0
    suspect_count: int = 0
    bad: int = 0

    @property
    def vertices(self) -> int:
        return sum(len(s) for s in self.segments)

    def value_range(self) -> tuple[float, float] | None:
        """The span of the good values (of the suspect ones when there is no good one): a
        gross error must not squash the curve; it is drawn at the plot's edge instead."""
        values = [v for seg in self.segments for _, v in seg] or [v for _, v in self.suspect]
        return (min(values), max(values)) if values else None


class Decimator:
    """Feeds readings of one point in time order; keeps at most ~2 vertices per column."""

    def __init__(self, from_ms: int, to_ms: int, interval_s: float | None,
                 columns: int = COLUMNS) -> None:
        if to_ms <= from_ms:
            raise ValueError("to_ms must be after from_ms")
        self.from_ms = from_ms
        self.to_ms = to_ms
        self.columns = columns
        self.gap_ms: int | None = (int(GAP_INTERVALS * interval_s * 1000)
                                   if interval_s and interval_s > 0 else None)
        self._pending: list[Reading] | None = [] if self.gap_ms is None else None
        self._series = Series(from_ms, to_ms, self.gap_ms)
        self._segment: list[tuple[int, float]] = []
        self._bucket: _Bucket | None = None
        self._prev_good: int | None = None
        self._bad_since_prev = False
        self._suspect: dict[int, _Bucket] = {}
        self._bad_columns: set[int] = set()

    def column(self, ts_ms: int) -> int:
        span = self.to_ms - self.from_ms
        col = (ts_ms - self.from_ms) * self.columns // span
        return min(max(int(col), 0), self.columns - 1)

    def feed(self, readings: Iterable[Reading]) -> None:
        if self._pending is not None:
            self._pending.extend(readings)
            good = [r for r in self._pending if _is_good(r)]
            if len(good) > _SPACING_SAMPLE:
                self._settle_gap(good)
            return
        for reading in readings:
            self._take(reading)

    def _settle_gap(self, good: Sequence[Reading]) -> None:
        """No poll interval: 3 × the median spacing of the first good readings."""
        spacings = [b.ts_ms - a.ts_ms for a, b in itertools.pairwise(good)
                    if b.ts_ms > a.ts_ms][:_SPACING_SAMPLE]
        self.gap_ms = int(GAP_INTERVALS * statistics.median(spacings)) if spacings else None
        self._series.gap_ms = self.gap_ms
        pending, self._pending = self._pending or [], None
        for reading in pending:
            self._take(reading)

    def _broken(self, ts_ms: int) -> bool:
        assert self._prev_good is not None
        too_far = self.gap_ms is not None and ts_ms - self._prev_good > self.gap_ms
        return self._bad_since_prev or too_far

    def _take(self, r: Reading) -> None:
        if not (self.from_ms <= r.ts_ms <= self.to_ms):
            return
        series = self._series
        if r.value is None or not math.isfinite(r.value) or r.quality == "bad":
            series.bad += 1
            self._bad_since_prev = True
            self._bad_columns.add(self.column(r.ts_ms))
            return
        col = self.column(r.ts_ms)
        if r.quality == "suspect":
            series.suspect_count += 1
            self._suspect.setdefault(col, _Bucket(col)).add(r.ts_ms, r.value)
            return
        series.good += 1
        if self._prev_good is None:
            if self.gap_ms is not None and r.ts_ms - self.from_ms > self.gap_ms:
                self._gap(self.from_ms, r.ts_ms)
        elif self._broken(r.ts_ms):
            series.gap_count += 1
            if self._bucket is not None and col != self._bucket.column:
                # Visible: close the segment. Inside one pixel column it is not.
                self._flush()
                self._close_segment()
                if self.column(self._prev_good) != col:
                    series.gaps.append((self._prev_good, r.ts_ms))
        if self._bucket is not None and col != self._bucket.column:
            self._flush()
        if self._bucket is None:
            self._bucket = _Bucket(col)
        self._bucket.add(r.ts_ms, r.value)
        self._prev_good = r.ts_ms
        self._bad_since_prev = False

    def _gap(self, start: int, end: int) -> None:
        self._series.gap_count += 1
        if self.column(start) != self.column(end):
            self._series.gaps.append((start, end))

    def _flush(self) -> None:
        if self._bucket is not None:
            self._segment.extend(self._bucket.vertices())
            self._bucket = None

    def _close_segment(self) -> None:
        if self._segment:
            self._series.segments.append(self._segment)
        self._segment = []

    def finish(self, end_ms: int) -> Series:
        """The series; data missing from the last good reading to ``end_ms`` is a gap."""
        if self._pending is not None:
            self._settle_gap([r for r in self._pending if _is_good(r)])
        self._flush()
        self._close_segment()
        end = min(end_ms, self.to_ms)
        if (self._prev_good is not None and self.gap_ms is not None
                and end - self._prev_good > self.gap_ms):
            self._gap(self._prev_good, end)
        series = self._series
        for bucket in sorted(self._suspect.values(), key=lambda b: b.column):
            series.suspect.extend(bucket.vertices())
        series.bad_columns = sorted(self._bad_columns)
        return series


def _is_good(r: Reading) -> bool:
    return r.quality == "good" and r.value is not None and math.isfinite(r.value)


# --- rendering -------------------------------------------------------------------------
