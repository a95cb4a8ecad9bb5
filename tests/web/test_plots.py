"""Server-side plots: decimation per pixel column, gaps, limit lines, time labels."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import pytest

from edge.web.plots import COLUMNS, Decimator, PlotLine, Series
from edge.web.plotsvg import render_svg
from vocab.model import Quality, Reading

DAY = 86_400_000
MIN = 60_000
T0 = int(datetime(2026, 12, 4, 16, 0, tzinfo=UTC).timestamp() * 1000)  # 00:00 in Beijing
SVG = "{http://www.w3.org/2000/svg}"


def reading(ts: int, value: float | None, quality: Quality = "good") -> Reading:
    return Reading("d", "p", ts, value, "m", quality)


def plot(readings: list[Reading], start: int, end: int, interval_s: float | None,
         lines: tuple[PlotLine, ...] = ()) -> tuple[Series, ET.Element]:
    decimator = Decimator(start, end, interval_s)
    for page in range(0, len(readings), 1000):  # fed page by page, as the app does
        decimator.feed(readings[page:page + 1000])
    series = decimator.finish(end)
    svg = render_svg(series, lines, "Asia/Shanghai", "m", "off scale", "no data", "t")
    return series, ET.fromstring(svg)


def vertices(root: ET.Element) -> list[tuple[float, float]]:
    found: list[tuple[float, float]] = []
    for line in root.iter(f"{SVG}polyline"):
        for pair in line.get("points", "").split():
            x, y = pair.split(",")
            found.append((float(x), float(y)))
    for dot in root.iter(f"{SVG}circle"):
        if dot.get("class") == "single":
            found.append((float(dot.get("cx", 0)), float(dot.get("cy", 0))))
    return found


def test_sparse_readings_keep_one_vertex_each() -> None:
    readings = [reading(T0 + i * 5 * MIN + 1, 100 + i % 7) for i in range(288)]
    series, root = plot(readings, T0, T0 + DAY, 300)
    assert len(vertices(root)) == 288
    assert len(list(root.iter(f"{SVG}polyline"))) == 1
    assert series.gap_count == 0


def test_dense_month_is_decimated_to_min_and_max_per_column() -> None:
    readings = [reading(T0 + i * MIN, 50.0 + (i % 60) / 100) for i in range(30 * 1440)]
    readings[20_000] = reading(readings[20_000].ts_ms, 58.0)  # one spike among 43,200
    _, root = plot(readings, T0, T0 + 30 * DAY, 60)
    points = vertices(root)
    assert len(points) <= 2 * COLUMNS
    top = min(y for _, y in points)  # the spike is the highest value: the smallest y
    spike_columns = [x for x, y in points if y == top]
    assert len(spike_columns) == 1  # the spike survived decimation


def test_gap_after_more_than_three_intervals_not_at_three() -> None:
    base = [reading(T0 + i * 10 * MIN, 1.0) for i in range(30)]
    # 3 intervals (30 min) apart: still one line; 3 intervals + 1 min: a gap.
    at_three = [*base[:10], reading(base[9].ts_ms + 30 * MIN, 1.0)]
    series, root = plot(at_three, T0, at_three[-1].ts_ms, 600)
    assert series.gap_count == 0 and len(list(root.iter(f"{SVG}polyline"))) == 1
    past_three = [*base[:10], reading(base[9].ts_ms + 31 * MIN, 1.0),
                  reading(base[9].ts_ms + 41 * MIN, 1.0)]
    series, root = plot(past_three, T0, past_three[-1].ts_ms, 600)
    gaps = [g for g in root.iter(f"{SVG}rect") if g.get("class") == "gap"]
    assert len(list(root.iter(f"{SVG}polyline"))) == 2
    assert [(int(g.get("data-from", 0)), int(g.get("data-to", 0))) for g in gaps] == \
        [(base[9].ts_ms, base[9].ts_ms + 31 * MIN)]


def test_bad_reading_breaks_the_line_and_suspect_is_marked_apart() -> None:
    readings = [reading(T0 + i * 10 * MIN, 2.0) for i in range(12)]
    readings[5] = reading(readings[5].ts_ms, None, "bad")
    readings[8] = reading(readings[8].ts_ms, 9.0, "suspect")
    series, root = plot(readings, T0, T0 + 2 * 3_600_000, 600)
    assert series.bad == 1 and series.suspect_count == 1
    assert len(list(root.iter(f"{SVG}polyline"))) == 2
    assert len(vertices(root)) == 10  # the suspect value is not joined into the line
    classes = [c.get("class") for c in root.iter(f"{SVG}circle")]
    assert classes.count("suspect offscale") == 1  # 9.0 is far outside the good values
    assert [line.get("class") for line in root.iter(f"{SVG}line")].count("bad") == 1


def test_missing_start_and_end_of_the_period_are_gaps() -> None:
    readings = [reading(T0 + 3_600_000 + i * 5 * MIN, 1.0) for i in range(12)]
    series, root = plot(readings, T0, T0 + 4 * 3_600_000, 300)
    gaps = [g for g in root.iter(f"{SVG}rect") if g.get("class") == "gap"]
    assert len(gaps) == 2 and series.gap_count == 2


def test_unknown_interval_uses_the_median_spacing() -> None:
    readings = [reading(T0 + i * 2 * MIN, 1.0) for i in range(40)]
    readings += [reading(readings[-1].ts_ms + 7 * MIN + i * 2 * MIN, 1.0) for i in range(5)]
    series, root = plot(readings, T0, readings[-1].ts_ms, None)
    assert series.gap_ms == 6 * MIN
    assert len(list(root.iter(f"{SVG}polyline"))) == 2


def test_limit_lines_and_off_scale_levels() -> None:
    readings = [reading(T0 + i * 5 * MIN, 123.0 + i / 1000) for i in range(100)]
    lines = (PlotLine(123.5, "warning", "warning"), PlotLine(123.5, "flood limit"),
             PlotLine(125.0, "crest"), PlotLine(500.0, "absurd", "critical"))
    _, root = plot(readings, T0, T0 + DAY, 300, lines)
    drawn = [(g.get("class"), g.get("data-value")) for g in root.iter(f"{SVG}line")
             if g.get("class") in ("limit", "level")]
    assert ("limit", "123.5") in drawn and ("level", "125.0") in drawn
    assert len([d for d in drawn if d[1] == "123.5"]) == 1  # one line, both labels
    off = [t for t in root.iter(f"{SVG}text") if t.get("class") == "offscale"]
    assert len(off) == 1 and "absurd 500 (off scale)" in "".join(off[0].itertext())


def test_time_labels_in_the_sites_time_zone() -> None:
    _, root = plot([reading(T0 + MIN, 1.0)], T0, T0 + DAY, 300)
    labels = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "xtick"]
    assert labels[0] == "00:00" and labels[1] == "03:00"  # Beijing, not UTC (16:00)
    _, root = plot([reading(T0 + MIN, 1.0)], T0, T0 + 7 * DAY, 300)
    labels = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "xtick"]
    assert labels[:2] == ["12-05", "12-06"]


def test_no_data_is_said() -> None:
    series, root = plot([], T0, T0 + DAY, 300)
    assert series.good == 0
    assert "no data" in "".join(root.itertext())


def test_empty_period_refused() -> None:
    with pytest.raises(ValueError, match="after"):
        Decimator(T0, T0, 300)
