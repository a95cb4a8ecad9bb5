"""Drawing a decimated series as SVG: axes in the site's time zone, limit lines, data.

What is drawn and why is described in edge/web/plots.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html import escape
from zoneinfo import ZoneInfo

from edge.web.plots import (
    HEIGHT,
    LEVEL_COLOUR,
    MARGIN_BOTTOM,
    MARGIN_LEFT,
    MARGIN_RIGHT,
    MARGIN_TOP,
    SEVERITY_COLOURS,
    WIDTH,
    PlotLine,
    Series,
)

__all__ = ["render_svg"]


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
