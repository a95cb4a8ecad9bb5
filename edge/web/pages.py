"""The keeper's pages as HTML: overview, alarms, plot, devices, inspection, errors.

Phone first (one column, large touch targets, readable in sunlight), fine on a laptop.
Everything a page needs is inside it: the style sheet inline, plots as inline SVG, no
script, no font or image from elsewhere, so the page works on a phone whose only network
is the gateway's Wi-Fi. Every text that came from the configuration, a device or a rule
is escaped. A value is never shown as live unless it is: bad, suspect and stale values
carry a visible badge, their age and their reason (lessons.md: "stale values look live").
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape
from urllib.parse import quote
from zoneinfo import ZoneInfo

from edge.web.i18n import Language, text
from edge.web.plots import Series
from edge.web.port import (
    PointStatus,
    SiteInfo,
)

__all__ = [
    "PageContext",
    "error_page",
    "mask_recipient",
    "overview_page",
    "plot_page",
]

OVERVIEW_REFRESH_S = 60
PERIODS: dict[str, int] = {"24h": 86_400_000, "7d": 7 * 86_400_000, "30d": 30 * 86_400_000}
SHOWN_LEVELS = ("dead", "flood_limit", "normal_pool", "design_flood", "check_flood", "crest")

STYLE = """
*{box-sizing:border-box}
body{margin:0;font-family:system-ui,"PingFang SC","Noto Sans CJK SC","Microsoft YaHei",
sans-serif;font-size:16px;line-height:1.4;color:#1a1a1a;background:#f4f5f7}
header{background:#16365c;color:#fff;padding:.6em .8em}
header h1{font-size:1.15em;margin:0}
header .sub{font-size:.8em;opacity:.85}
nav{display:flex;background:#0f2744}
nav a{flex:1;text-align:center;color:#dfe8f3;padding:.7em .2em;text-decoration:none}
nav a.on{background:#f4f5f7;color:#16365c;font-weight:bold}
main{padding:.6em;max-width:60em;margin:0 auto}
section{background:#fff;border-radius:6px;margin:0 0 .8em;padding:.6em .8em;
box-shadow:0 1px 2px rgba(0,0,0,.1)}
h2{font-size:1.05em;margin:.1em 0 .5em;color:#16365c}
ul.pts,ul.cards{list-style:none;margin:0;padding:0}
.pt{display:flex;flex-wrap:wrap;align-items:baseline;gap:.1em .5em;padding:.45em 0;
border-top:1px solid #eee}
.pt:first-child{border-top:0}
.pt .name{flex:1 1 10em;color:#16365c}
.pt .val{font-size:1.25em;font-weight:bold;font-variant-numeric:tabular-nums}
.pt .meta{flex-basis:100%;font-size:.8em;color:#555}
.big .val{font-size:2em}
.badge{display:inline-block;white-space:nowrap;font-size:.75em;padding:.05em .45em;
border-radius:3px;
font-weight:bold;background:#2e7d32;color:#fff;vertical-align:middle}
.q-suspect .badge.q{background:#e09000}
.q-bad .badge.q,.q-never .badge.q{background:#b00020}
.badge.stale{background:#666}
.q-bad .val{color:#b00020;text-decoration:line-through}
.q-never .val{color:#999}
.stale .val{color:#888}
.q-suspect .val{color:#a06000}
.sev-warning{background:#b8860b}.sev-alarm{background:#d2691e}.sev-critical{background:#c00000}
.card{border:1px solid #ddd;border-left:6px solid #999;border-radius:4px;padding:.5em .6em;
margin:.5em 0}
.card.sev-warning,.card.sev-alarm,.card.sev-critical{background:#fff}
.card.sev-warning{border-left-color:#b8860b}.card.sev-alarm{border-left-color:#d2691e}
.card.sev-critical{border-left-color:#c00000}
.card dl{display:grid;grid-template-columns:auto 1fr;gap:.1em .6em;margin:.3em 0;font-size:.9em}
.card dt{color:#555}.card dd{margin:0}
table{border-collapse:collapse;width:100%;font-size:.85em}
th,td{text-align:left;padding:.3em .35em;border-top:1px solid #eee;vertical-align:top}
td.t{white-space:nowrap}
.scroll{overflow-x:auto}
form.ack{display:flex;flex-wrap:wrap;gap:.4em;margin-top:.4em}
form.ack input{font-size:1em;padding:.45em;border:1px solid #aaa;border-radius:4px;
flex:1 1 8em;min-width:0}
button{font-size:1em;padding:.55em 1em;border:0;border-radius:4px;background:#16365c;
color:#fff}
button.big{width:100%;font-size:1.2em;padding:.8em}
.notice{background:#e6f4ea;border:1px solid #2e7d32;padding:.5em;border-radius:4px}
.error{background:#fdecea;border:1px solid #b00020;padding:.5em;border-radius:4px}
.banner{display:block;padding:.5em .8em;background:#c00000;color:#fff;text-decoration:none;
font-weight:bold}
.banner.calm{background:#2e7d32}
.periods a{display:inline-block;margin:0 .3em .4em 0;padding:.35em .8em;border:1px solid #16365c;
border-radius:4px;text-decoration:none;color:#16365c}
.periods a.on{background:#16365c;color:#fff}
svg.plot{width:100%;max-width:640px;height:auto;display:block}
.levels td.num{text-align:right;font-variant-numeric:tabular-nums}
footer{font-size:.75em;color:#666;text-align:center;padding:1em}
.muted{color:#666;font-size:.85em}
"""


@dataclass(frozen=True)
class PageContext:
    """What every page of one request shares."""

    lang: Language
    site: SiteInfo
    now_ms: int
    csrf: str
    active_alarms: int

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.site.timezone)

    def t(self, key: str, **values: object) -> str:
        return text(self.lang, key, **values)


# --- formatting ------------------------------------------------------------------------

def fmt_number(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    if abs(value) >= 1000:
        return f"{value:.1f}"
    return f"{value:.3f}".rstrip("0").rstrip(".") if value != 0 else "0"


def fmt_time(ts_ms: int | None, tz: ZoneInfo) -> str:
    if ts_ms is None:
        return "—"
    return datetime.fromtimestamp(ts_ms / 1000, tz).strftime("%Y-%m-%d %H:%M:%S")


def fmt_short(ts_ms: int, tz: ZoneInfo) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, tz).strftime("%m-%d %H:%M")


def fmt_age(ctx: PageContext, ts_ms: int | None) -> str:
    if ts_ms is None:
        return ""
    seconds = max(0, (ctx.now_ms - ts_ms) // 1000)
    if seconds < 120:
        return ctx.t("age.seconds", n=seconds)
    if seconds < 7200:
        return ctx.t("age.minutes", n=seconds // 60)
    if seconds < 172_800:
        return ctx.t("age.hours", n=seconds // 3600)
    return ctx.t("age.days", n=seconds // 86400)


def mask_recipient(recipient: str) -> str:
    """Phone numbers with all but their last four digits masked."""
    return re.sub(r"\d{7,}", lambda m: "*" * (len(m.group()) - 4) + m.group()[-4:],
                  recipient)


def point_label(ctx: PageContext, point: PointStatus | None, ref: str) -> str:
    """The configured name; for an unnamed rainfall sum its window; else the id."""
    if point is not None and point.name:
        return point.name
    window = next((r.window for r in ctx.site.rainfall if r.point == ref), None)
    return ctx.t("rain." + window) if window else ref


def plot_href(ref: str) -> str:
    return "/plot/" + "/".join(quote(part, safe="") for part in ref.split("/", 1))


def esc(value: object) -> str:
    return escape(str(value), quote=True)


# --- the frame -------------------------------------------------------------------------

def layout(ctx: PageContext, title: str, body: str, active: str = "",
           refresh_s: int | None = None) -> str:
    nav = "".join(
        f'<a href="{href}"{" class=on" if key == active else ""}>{esc(ctx.t("nav." + key))}</a>'
        for key, href in (("overview", "/"), ("alarms", "/alarms"), ("devices", "/devices")))
    refresh = (f'<meta http-equiv="refresh" content="{refresh_s}">' if refresh_s else "")
    banner = ""
    if ctx.active_alarms:
        banner = (f'<a class="banner" href="/alarms">'
                  f'{esc(ctx.t("page.active_alarms", count=ctx.active_alarms))}</a>')
    site_name = ctx.site.name or ctx.site.id
    footer = [ctx.t("page.generated", time=fmt_time(ctx.now_ms, ctx.tz)),
              ctx.t("page.offline_note")]
    if refresh_s:
        footer.append(ctx.t("page.auto_refresh", seconds=refresh_s))
    return (
        f'<!DOCTYPE html><html lang="{"zh-CN" if ctx.lang == "zh" else "en"}"><head>'
        '<meta charset="utf-8"><meta name="viewport" content="width=device-width,'
        f'initial-scale=1">{refresh}<link rel="icon" href="data:,">'
        f"<title>{esc(title)} · {esc(site_name)}</title><style>{STYLE}</style></head><body>"
        f'<header><h1>{esc(site_name)}</h1><div class="sub">{esc(ctx.site.gateway)} · '
        f"{esc(ctx.site.timezone)}</div></header><nav>{nav}</nav>{banner}"
        f"<main>{body}</main><footer>{' · '.join(esc(f) for f in footer)}</footer>"
        "</body></html>")


def error_page(lang: Language, status: int, message: str) -> str:
    """A bare page for errors: it needs nothing from the daemon, so it always renders."""
    title = text(lang, "error.title")
    return (
        f'<!DOCTYPE html><html lang="{"zh-CN" if lang == "zh" else "en"}"><head>'
        '<meta charset="utf-8"><meta name="viewport" content="width=device-width,'
        f'initial-scale=1"><link rel="icon" href="data:,"><title>{status} {esc(title)}'
        f"</title><style>{STYLE}</style></head><body><header><h1>{status} {esc(title)}</h1>"
        f'</header><main><section><p class="error" id="error-message">{esc(message)}</p>'
        f'<p><a href="/">{esc(text(lang, "error.back"))}</a></p></section></main>'
        "</body></html>")


# --- point rows ------------------------------------------------------------------------

def point_classes(p: PointStatus) -> str:
    quality = p.quality or "never"
    return f"pt q-{quality}" + (" stale" if p.stale else "")


def badges(ctx: PageContext, p: PointStatus) -> str:
    quality = p.quality or "never"
    out = f'<span class="badge q">{esc(ctx.t("quality." + quality))}</span>'
    if p.stale:
        out += f' <span class="badge stale">{esc(ctx.t("quality.stale"))}</span>'
    return out


def point_meta(ctx: PageContext, p: PointStatus) -> str:
    parts = [fmt_time(p.ts_ms, ctx.tz)]
    if p.ts_ms is not None:
        parts.append(fmt_age(ctx, p.ts_ms))
    if p.name:
        parts.append(p.point)
    meta = " · ".join(esc(x) for x in parts)
    if p.reason:
        meta += f' · <span class="reason">{esc(ctx.t("reason", reason=p.reason))}</span>'
    return meta


def point_row(ctx: PageContext, p: PointStatus, label: str | None = None,
              extra_class: str = "", value: float | None = None,
              extra_badge: str = "") -> str:
    shown = p.value if value is None else value
    return (
        f'<li class="{point_classes(p)} {extra_class}" data-point="{esc(p.point)}">'
        f'<a class="name" href="{plot_href(p.point)}">{esc(label or point_label(ctx, p, p.point))}'
        f'</a><span><span class="val">{esc(fmt_number(shown))}</span> '
        f'<span class="unit">{esc(p.unit)}</span></span> {badges(ctx, p)}{extra_badge}'
        f'<span class="meta">{point_meta(ctx, p)}</span></li>')


def _point_list(ctx: PageContext, points: Iterable[PointStatus]) -> str:
    rows = "".join(point_row(ctx, p) for p in points)
    return f'<ul class="pts">{rows}</ul>' if rows else ""


# --- overview --------------------------------------------------------------------------

def _level_section(ctx: PageContext, by_ref: Mapping[str, PointStatus],
                   others: Sequence[PointStatus]) -> str:
    site = ctx.site
    body = ""
    level = by_ref.get(site.level_point) if site.level_point else None
    if level is None:
        body += f'<p class="muted">{esc(ctx.t("level.none"))}</p>'
    else:
        body += f'<ul class="pts">{point_row(ctx, level, extra_class="big")}</ul>'
        rows = []
        usable = level.value is not None and math.isfinite(level.value)
        for item in site.levels:
            label = ctx.t("levels." + item.key) if item.key in SHOWN_LEVELS else item.key
            diff = ""
            if usable and level.value is not None:
                delta = level.value - item.value
                side = ctx.t("level.above") if delta > 0 else ctx.t("level.below")
                diff = f"{side} {abs(delta):.2f} m" if delta else "="
            rows.append(f'<tr data-level="{esc(item.key)}"><td>{esc(label)}</td>'
                        f'<td class="num">{item.value:.2f} m</td>'
                        f'<td class="num diff">{esc(diff)}</td></tr>')
        crest = next((lv.value for lv in site.levels if lv.key == "crest"), None)
        freeboard = ""
        if crest is not None and level.value is not None and math.isfinite(level.value):
            freeboard = point_row(ctx, level, label=ctx.t("level.freeboard"),
                                  extra_class="freeboard", value=crest - level.value)
            freeboard = f'<ul class="pts">{freeboard}</ul>'
        if rows:
            body += (f'<table class="levels"><tr><th></th><th class="num"></th>'
                     f'<th class="num">{esc(ctx.t("level.to_level"))}</th></tr>'
                     f'{"".join(rows)}</table>')
        body += freeboard
    body += _point_list(ctx, others)
    return f'<section id="level"><h2>{esc(ctx.t("section.level"))}</h2>{body}</section>'


def _rain_section(ctx: PageContext, by_ref: Mapping[str, PointStatus],
                  others: Sequence[PointStatus]) -> str:
    rows = []
    for item in ctx.site.rainfall:
        point = by_ref.get(item.point)
        label = ctx.t("rain." + item.window)
        if point is None:
            point = PointStatus(item.point, "", "mm", "rainfall", "rainfall", None, None, None,
                                None, False)
        rows.append(point_row(ctx, point, label=label, extra_class=f"rain-{item.window}"))
    body = f'<ul class="pts">{"".join(rows)}</ul>' if rows else \
        f'<p class="muted">{esc(ctx.t("rain.none"))}</p>'
    body += _point_list(ctx, others)
    return f'<section id="rainfall"><h2>{esc(ctx.t("section.rainfall"))}</h2>{body}</section>'


def overview_page(ctx: PageContext, points: Sequence[PointStatus]) -> str:
    by_ref = {p.point: p for p in points}
    featured = {ctx.site.level_point} | {r.point for r in ctx.site.rainfall}
    sections: dict[str, list[PointStatus]] = {}
    for p in points:
        if p.point not in featured:
            sections.setdefault(p.section, []).append(p)
    body = _level_section(ctx, by_ref, sections.get("level", []))
    body += _rain_section(ctx, by_ref, sections.get("rainfall", []))
    for key in ("seepage", "gradient", "displacement", "other"):
        listed = sections.get(key, [])
        if listed:
            body += (f'<section id="{key}"><h2>{esc(ctx.t("section." + key))}</h2>'
                     f"{_point_list(ctx, listed)}</section>")
    if not points:
        body += f'<section><p class="muted">{esc(ctx.t("points.none"))}</p></section>'
    return layout(ctx, ctx.t("overview.title"), body, "overview", OVERVIEW_REFRESH_S)


# --- alarms ----------------------------------------------------------------------------

def plot_page(ctx: PageContext, point: PointStatus, period: str | None, svg: str,
              series: Series, from_ms: int, to_ms: int, truncated_at: int | None) -> str:
    label = point_label(ctx, point, point.point)
    links = "".join(
        f'<a href="{plot_href(point.point)}?period={key}"'
        f'{" class=on" if key == period else ""}>{esc(ctx.t("plot." + key))}</a>'
        for key in PERIODS)
    gap = ""
    if series.gap_ms:
        minutes = series.gap_ms / 60_000
        gap = ctx.t("plot.gap_rule", gap=(f"{minutes:g} min" if minutes < 120
                                          else f"{minutes / 60:g} h"))
    span = ctx.t("plot.range", start=fmt_time(from_ms, ctx.tz), end=fmt_time(to_ms, ctx.tz))
    counts = ctx.t("plot.count", good=series.good, suspect=series.suspect_count,
                   bad=series.bad, gaps=series.gap_count)
    body = (
        f'<section id="plot"><h2>{esc(ctx.t("plot.title", point=label))}</h2>'
        f'<ul class="pts">{point_row(ctx, point)}</ul>'
        f'<div class="periods">{links}</div>'
        f'<p class="muted">{esc(span)}</p>{svg}'
        f'<p class="muted" id="plot-counts">{esc(counts)}'
        f"{(' ' + esc(gap)) if gap else ''}</p>")
    if truncated_at is not None:
        body += f'<p class="error">{esc(ctx.t("plot.truncated", n=truncated_at))}</p>'
    body += f'<p><a href="/">{esc(ctx.t("plot.back"))}</a></p></section>'
    return layout(ctx, ctx.t("plot.title", point=label), body)


# --- devices and inspection ------------------------------------------------------------
