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
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html import escape
from zoneinfo import ZoneInfo

from vocab.model import Reading

__all__ = ["GAP_INTERVALS", "Decimator", "PlotLine", "Series", "render_svg"]

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

def _nice_step(span: float, count: int = 5) -> float:
    raw = span / max(count, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10 * magnitude


def _decimals(step: float) -> int:
    """Decimals that print every multiple of ``step`` exactly (0.25 -> 2, 5 -> 0)."""
    for decimals in range(7):
        if abs(round(step, decimals) - step) <= step * 1e-9:
            return decimals
    return 6


def _y_range(series: Series, lines: Sequence[PlotLine]) -> tuple[float, float, list[PlotLine],
                                                                     list[PlotLine]]:
    """Axis bounds; lines within reach of the data are drawn, the rest named off scale."""
    data = series.value_range()
    if data is None:
        values = [line.value for line in lines] or [0.0]
        data = (min(values), max(values))
    low, high = data
    span = high - low
    reach = max(span, abs(high) * 0.02, 1e-6)
    shown = [ln for ln in lines if low - reach <= ln.value <= high + reach]
    off = [ln for ln in lines if ln not in shown]
    for line in shown:
        low, high = min(low, line.value), max(high, line.value)
    if high - low < 1e-9:
        pad = max(abs(high) * 0.001, 0.05)
        low, high = low - pad, high + pad
    pad = (high - low) * 0.06
    return low - pad, high + pad, shown, off


def _time_step(span_ms: int) -> timedelta:
    for hours in (1, 2, 3, 6, 12, 24, 48, 72, 120, 168):
        if span_ms / (hours * 3_600_000) <= 8:
            return timedelta(hours=hours)
    return timedelta(days=14)


def _time_ticks(from_ms: int, to_ms: int, tz: ZoneInfo) -> list[tuple[int, str, str]]:
    """(ts, main label, date label or '') at local hour or midnight boundaries."""
    step = _time_step(to_ms - from_ms)
    start = datetime.fromtimestamp(from_ms / 1000, tz)
    ticks: list[tuple[int, str, str]] = []
    if step < timedelta(days=1):
        hours = int(step.total_seconds() // 3600)
        local = start.replace(minute=0, second=0, microsecond=0)
        while local.timestamp() * 1000 < from_ms or local.hour % hours:
            local = (local.astimezone(UTC) + timedelta(hours=1)).astimezone(tz)
        while (ts := int(local.timestamp() * 1000)) <= to_ms:
            date = local.strftime("%m-%d") if (local.hour == 0 or not ticks) else ""
            ticks.append((ts, local.strftime("%H:%M"), date))
            local = (local.astimezone(UTC) + step).astimezone(tz)
    else:
        days = step.days
        day = start.date() + timedelta(days=1) if start.time() != datetime.min.time() \
            else start.date()
        while True:
            local = datetime(day.year, day.month, day.day, tzinfo=tz)
            ts = int(local.timestamp() * 1000)
            if ts > to_ms:
                break
            ticks.append((ts, local.strftime("%m-%d"), ""))
            day += timedelta(days=days)
    return ticks


def _merged(lines: Sequence[PlotLine]) -> list[PlotLine]:
    """Lines at the same value drawn once, their labels joined (a flood-limit level that
    is also a warning limit), in the colour of the most severe."""
    rank = {None: 0, "warning": 1, "alarm": 2, "critical": 3}
    by_value: dict[float, PlotLine] = {}
    for line in lines:
        known = by_value.get(line.value)
        if known is None:
            by_value[line.value] = line
        elif line.label not in known.label.split(" / "):
            severity = max(known.severity, line.severity, key=lambda s: rank.get(s, 0))
            by_value[line.value] = PlotLine(line.value, f"{known.label} / {line.label}",
                                            severity)
    return list(by_value.values())


def _fmt(value: float, decimals: int) -> str:
    return f"{value:.{decimals}f}"


@dataclass(frozen=True)
class _Canvas:
    """Where values and times land on the plot."""

    series: Series
    low: float
    high: float
    x0: float = MARGIN_LEFT
    x1: float = WIDTH - MARGIN_RIGHT
    y0: float = MARGIN_TOP
    y1: float = HEIGHT - MARGIN_BOTTOM

    def x(self, ts: int) -> float:
        span_ms = self.series.to_ms - self.series.from_ms
        return round(self.x0 + (ts - self.series.from_ms) * (self.x1 - self.x0) / span_ms, 1)

    def y(self, value: float) -> float:
        return round(self.y1 - (value - self.low) * (self.y1 - self.y0) / (self.high - self.low),
                     1)


def render_svg(series: Series, lines: Sequence[PlotLine], timezone: str, unit: str,
               off_scale_label: str, no_data_label: str, title: str) -> str:
    """The plot as an SVG element for inline use in the page."""
    low, high, shown, off = _y_range(series, _merged(lines))
    c = _Canvas(series, low, high)
    out: list[str] = [
        f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}"'
        f' role="img" aria-label="{escape(title)}" font-family="sans-serif" font-size="12">',
        f"<title>{escape(title)}</title>",
        f'<rect x="{c.x0}" y="{c.y0}" width="{c.x1 - c.x0}" height="{c.y1 - c.y0}" '
        'fill="#fff" stroke="#999"/>',
    ]
    for start, end in series.gaps:
        out.append(f'<rect class="gap" x="{c.x(start)}" y="{c.y0}" width="'
                   f'{max(round(c.x(end) - c.x(start), 1), 0.5)}" height="{c.y1 - c.y0}" '
                   f'fill="#e8e8e8" data-from="{start}" data-to="{end}"/>')
    out += _value_axis(c, unit)
    out += _time_axis(c, ZoneInfo(timezone))
    out += _level_lines(c, shown, off, off_scale_label)
    out += _data(c)
    if not series.segments and not series.suspect:
        out.append(f'<text class="nodata" x="{(c.x0 + c.x1) / 2}" y="{(c.y0 + c.y1) / 2}" '
                   f'text-anchor="middle" font-size="16" fill="#666">'
                   f"{escape(no_data_label)}</text>")
    out.append("</svg>")
    return "".join(out)


def _value_axis(c: _Canvas, unit: str) -> list[str]:
    step = _nice_step(c.high - c.low)
    decimals = _decimals(step)
    out = []
    for index in range(math.ceil(c.low / step), math.floor(c.high / step) + 1):
        tick = index * step
        ty = c.y(tick)
        out.append(f'<line x1="{c.x0}" x2="{c.x1}" y1="{ty}" y2="{ty}" stroke="#eee"/>'
                   f'<text x="{c.x0 - 4}" y="{ty + 4}" text-anchor="end">'
                   f"{_fmt(tick, decimals)}</text>")
    out.append(f'<text x="4" y="{c.y0 - 4}">{escape(unit)}</text>')
    return out


def _time_axis(c: _Canvas, tz: ZoneInfo) -> list[str]:
    out = []
    for ts, label, date in _time_ticks(c.series.from_ms, c.series.to_ms, tz):
        tx = c.x(ts)
        out.append(f'<line x1="{tx}" x2="{tx}" y1="{c.y0}" y2="{c.y1}" stroke="#eee"/>'
                   f'<text class="xtick" x="{tx}" y="{c.y1 + 14}" text-anchor="middle">'
                   f"{label}</text>")
        if date:
            out.append(f'<text x="{tx}" y="{c.y1 + 27}" text-anchor="middle">{date}</text>')
    return out


def _level_lines(c: _Canvas, shown: Sequence[PlotLine], off: Sequence[PlotLine],
                 off_scale_label: str) -> list[str]:
    """Limits and characteristic levels: lines where they fall on the plot, a labelled
    arrow at its edge where they do not."""
    out = []
    for line in shown:
        colour = SEVERITY_COLOURS.get(line.severity or "", LEVEL_COLOUR)
        dash = "6 4" if line.severity else "2 3"
        kind = "limit" if line.severity else "level"
        ly = c.y(line.value)
        out.append(f'<line class="{kind}" x1="{c.x0}" x2="{c.x1}" y1="{ly}" y2="{ly}" '
                   f'stroke="{colour}" stroke-dasharray="{dash}" data-value="{line.value}"/>'
                   f'<text x="{c.x1 - 2}" y="{ly - 3}" text-anchor="end" fill="{colour}">'
                   f"{escape(line.label)} {line.value:g}</text>")
    for index, line in enumerate(off):
        above = line.value > c.high
        ly = c.y0 + 12 + 12 * index if above else c.y1 - 4 - 12 * index
        colour = SEVERITY_COLOURS.get(line.severity or "", LEVEL_COLOUR)
        out.append(f'<text class="offscale" x="{c.x0 + 4}" y="{ly}" fill="{colour}" '
                   f'data-value="{line.value}">{"↑" if above else "↓"} {escape(line.label)} '
                   f"{line.value:g} ({escape(off_scale_label)})</text>")
    return out


def _data(c: _Canvas) -> list[str]:
    """Good readings as lines broken at gaps, suspect ones as rings, bad ones as ticks."""
    out = []
    for segment in c.series.segments:
        if len(segment) == 1:
            ts, value = segment[0]
            out.append(f'<circle class="single" cx="{c.x(ts)}" cy="{c.y(value)}" r="2.5" '
                       'fill="#1a1a1a"/>')
        else:
            points = " ".join(f"{c.x(ts)},{c.y(v)}" for ts, v in segment)
            out.append(f'<polyline class="series" points="{points}" fill="none" '
                       'stroke="#1a1a1a" stroke-width="1.5" stroke-linejoin="round"/>')
    for ts, value in c.series.suspect:
        cy = min(max(c.y(value), c.y0), c.y1)
        edge = " offscale" if cy != c.y(value) else ""
        out.append(f'<circle class="suspect{edge}" cx="{c.x(ts)}" cy="{cy}" r="3" fill="none" '
                   f'stroke="#d08000" data-value="{value}"/>')
    for col in c.series.bad_columns:
        bx = round(c.x0 + col + 0.5, 1)
        out.append(f'<line class="bad" x1="{bx}" x2="{bx}" y1="{c.y1 - 8}" y2="{c.y1}" '
                   'stroke="#c00000" stroke-width="1.5"/>')
    return out
