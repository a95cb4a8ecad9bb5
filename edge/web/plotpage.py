"""A plot for the keeper's page: the period asked, the history read page by page, drawn.

History is read through the port (the store's reader) ``HISTORY_PAGE`` readings at a time,
at most ``MAX_PLOT_READINGS``; decimating and drawing are CPU work and run on worker
threads, so a 30-day plot never holds the daemon's loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from edge.web import pages
from edge.web.guard import PageError, parse_time
from edge.web.plots import COLUMNS, Decimator, PlotLine, Series
from edge.web.plotsvg import render_svg
from edge.web.port import KeeperPort, PointStatus, SiteInfo

HISTORY_PAGE = 5000
MAX_PLOT_READINGS = 300_000
MAX_RANGE_MS = 31 * 86_400_000


@dataclass(frozen=True)
class Plot:
    svg: str
    series: Series
    truncated_at: int | None  # readings read when MAX_PLOT_READINGS cut the period short


def plot_range(params: Mapping[str, str], tz: ZoneInfo,
               now: int) -> tuple[str | None, int, int]:
    """(period name or None, from, to) of a plot request: a named period ending now or at
    ``end``, or an explicit ``from``/``to`` of at most 31 days."""
    if ("from" in params) != ("to" in params):
        raise PageError(400, "error.bad_range", days=MAX_RANGE_MS // 86_400_000)
    if "from" in params:
        if "period" in params or "end" in params:
            raise PageError(400, "error.unknown_param", names="period/end",
                            known="from, to")
        start = parse_time("from", params["from"], tz, now)
        end = parse_time("to", params["to"], tz, now)
        if not 0 < end - start <= MAX_RANGE_MS:
            raise PageError(400, "error.bad_range", days=MAX_RANGE_MS // 86_400_000)
        return None, start, end
    period = params.get("period", "24h")
    if period not in pages.PERIODS:
        raise PageError(400, "error.bad_period", value=period[:40],
                        known=", ".join(pages.PERIODS))
    end = parse_time("end", params["end"], tz, now) if "end" in params else now
    return period, end - pages.PERIODS[period], end


def plot_lines(point: PointStatus, site: SiteInfo, t: Callable[[str], str]) -> list[PlotLine]:
    """The point's alarm limits, and for the reservoir level the characteristic levels."""
    lines = [PlotLine(limit.value, t("severity." + limit.severity), limit.severity)
             for limit in point.limits]
    if point.point == site.level_point:
        for level in site.levels:
            if level.key in pages.SHOWN_LEVELS and level.key != "dead":
                lines.append(PlotLine(level.value, t("levels." + level.key)))
    return lines


async def draw_plot(port: KeeperPort, ctx: pages.PageContext, site: SiteInfo,
                    point: PointStatus, start: int, end: int,
                    t: Callable[..., str]) -> Plot:
    ref = point.point
    decimator = Decimator(start, end, point.interval_s, COLUMNS)
    cursor, read, truncated_at = start, 0, None
    while True:
        want = min(HISTORY_PAGE, MAX_PLOT_READINGS - read)
        rows = await port.history(ref, cursor, end, want)
        # Decimating 5,000 readings is CPU work: a worker's, not the loop's.
        await asyncio.to_thread(decimator.feed, rows)
        read += len(rows)
        if len(rows) < want or not rows:
            break
        cursor = rows[-1].ts_ms + 1
        if read >= MAX_PLOT_READINGS:
            if await port.history(ref, cursor, end, 1):
                truncated_at = read
            break
        await asyncio.sleep(0)  # let polls and the uplink run between pages
    series = decimator.finish(min(end, ctx.now_ms))
    label = pages.point_label(ctx, point, ref)
    svg = await asyncio.to_thread(render_svg, series, plot_lines(point, site, t),
                                  site.timezone, point.unit, t("plot.off_scale"),
                                  t("plot.no_data"), label)
    return Plot(svg, series, truncated_at)
