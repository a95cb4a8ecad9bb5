"""The keeper's alarm, device and inspection pages (the overview and plots are in
edge/web/pages.py, with the layout and formatting they share)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from edge.web.i18n import has_text
from edge.web.pages import (
    OVERVIEW_REFRESH_S,
    PageContext,
    esc,
    fmt_age,
    fmt_number,
    fmt_short,
    fmt_time,
    layout,
    mask_recipient,
    plot_href,
    point_label,
    point_row,
)
from edge.web.port import (
    AlarmEvent,
    AlarmStatus,
    BusHealth,
    ChannelHealth,
    Inspection,
    Notification,
    PointStatus,
)
from vocab.model import SEVERITY_RANK


def _severity_badge(ctx: PageContext, severity: str | None) -> str:
    if not severity:
        return ""
    return f'<span class="badge sev-{esc(severity)}">{esc(ctx.t("severity." + severity))}</span>'


def _unit_of(by_ref: Mapping[str, PointStatus], ref: str) -> str:
    point = by_ref.get(ref)
    return point.unit if point else ""


def acknowledger(ctx: PageContext, by: str | None, via: str | None) -> str:
    """Who acknowledged and how: 张三（本地页面）; either part may be missing."""
    how = ""
    if via:
        how = ctx.t("via." + via) if has_text("via." + via) else via
    if by and how:
        return f"{by}（{how}）" if ctx.lang == "zh" else f"{by} ({how})"
    return by or how


def _alarm_card(ctx: PageContext, alarm: AlarmStatus, by_ref: Mapping[str, PointStatus],
                ack_enabled: bool) -> str:
    unit = _unit_of(by_ref, alarm.point)
    label = point_label(ctx, by_ref.get(alarm.point), alarm.point)
    if alarm.acknowledged:
        who = acknowledger(ctx, alarm.acknowledged_by, alarm.acknowledged_via)
        status = (ctx.t("alarm.acked_by", by=who, time=fmt_time(alarm.acknowledged_ms, ctx.tz))
                  if who else ctx.t("alarm.acked_unknown"))
    else:
        status = ctx.t("alarm.unacked")
    form = ""
    if not alarm.acknowledged and ack_enabled:
        form = (
            '<form class="ack" method="post" action="/alarms/ack">'
            f'<input type="hidden" name="csrf" value="{esc(ctx.csrf)}">'
            f'<input type="hidden" name="alarm_id" value="{esc(alarm.alarm_id)}">'
            f'<input name="name" maxlength="40" required autocomplete="name" '
            f'placeholder="{esc(ctx.t("ack.name"))}" aria-label="{esc(ctx.t("ack.name"))}">'
            f'<input name="pin" type="password" inputmode="numeric" maxlength="64" required '
            f'autocomplete="off" placeholder="{esc(ctx.t("ack.pin"))}" '
            f'aria-label="{esc(ctx.t("ack.pin"))}">'
            f'<button type="submit">{esc(ctx.t("ack.submit"))}</button></form>')
    return (
        f'<li class="card alarm sev-{esc(alarm.severity)}'
        f'{" acked" if alarm.acknowledged else ""}" data-alarm="{esc(alarm.alarm_id)}">'
        f'{_severity_badge(ctx, alarm.severity)} <a href="{plot_href(alarm.point)}">'
        f"<b>{esc(label)}</b></a><div>{esc(alarm.message)}</div><dl>"
        f'<dt>{esc(ctx.t("alarm.since"))}</dt><dd class="since">'
        f"{esc(fmt_time(alarm.since_ms, ctx.tz))} ({esc(fmt_age(ctx, alarm.since_ms))})</dd>"
        f'<dt>{esc(ctx.t("alarm.value"))}</dt><dd class="value">'
        f"{esc(fmt_number(alarm.value))} {esc(unit)}</dd>"
        f'<dt>{esc(ctx.t("alarm.limit"))}</dt><dd class="limit">'
        f"{esc(fmt_number(alarm.limit))} {esc(unit)}</dd>"
        f'<dt>{esc(ctx.t("alarm.rule"))}</dt><dd>{esc(alarm.rule)} · {esc(alarm.alarm_id)}</dd>'
        f'<dt>{esc(ctx.t("alarm.state"))}</dt><dd class="ack-status">{esc(status)}</dd>'
        f"</dl>{form}</li>")


def alarms_page(ctx: PageContext, active: Sequence[AlarmStatus],
                history: Sequence[AlarmEvent], history_limit: int,
                notifications: Sequence[Notification], points: Sequence[PointStatus],
                ack_enabled: bool, notice: str = "", error: str = "") -> str:
    by_ref = {p.point: p for p in points}
    body = ""
    if notice:
        body += f'<p class="notice" id="notice">{esc(notice)}</p>'
    if error:
        body += f'<p class="error" id="error-message">{esc(error)}</p>'
    ordered = sorted(active, key=lambda a: (-SEVERITY_RANK.get(a.severity, 0), a.since_ms))
    cards = "".join(_alarm_card(ctx, a, by_ref, ack_enabled) for a in ordered)
    body += (f'<section id="active"><h2>{esc(ctx.t("alarms.active"))}</h2>'
             + (f'<ul class="cards">{cards}</ul>' if cards
                else f'<p class="muted">{esc(ctx.t("alarms.none_active"))}</p>')
             + ("" if ack_enabled or not any(not a.acknowledged for a in active)
                else f'<p class="muted" id="ack-disabled">{esc(ctx.t("ack.disabled"))}</p>')
             + "</section>")
    rows = []
    for event in history:
        unit = _unit_of(by_ref, event.point)
        rows.append(
            f'<tr data-alarm="{esc(event.alarm_id)}" data-state="{esc(event.state)}">'
            f'<td class="t">{esc(fmt_short(event.ts_ms, ctx.tz))}</td>'
            f"<td>{esc(point_label(ctx, by_ref.get(event.point), event.point))}</td>"
            f"<td>{_severity_badge(ctx, event.severity)}</td>"
            f'<td>{esc(ctx.t("state." + event.state))}</td>'
            f"<td>{esc(fmt_number(event.value))} {esc(unit)}</td>"
            f"<td>{esc(fmt_number(event.limit))} {esc(unit)}</td>"
            f"<td>{esc(acknowledger(ctx, event.by, event.via))}</td></tr>")
    head = "".join(f"<th>{esc(ctx.t(k))}</th>" for k in (
        "col.time", "col.point", "alarm.severity", "alarm.state", "alarm.value",
        "alarm.limit", "alarm.by"))
    body += f'<section id="history"><h2>{esc(ctx.t("alarms.history"))}</h2>'
    if rows:
        body += (f'<div class="scroll"><table><tr>{head}</tr>{"".join(rows)}</table></div>')
        if len(history) >= history_limit:
            truncated = ctx.t("alarms.history_truncated", n=history_limit)
            body += f'<p class="muted">{esc(truncated)}</p>'
    else:
        body += f'<p class="muted">{esc(ctx.t("alarms.none_history"))}</p>'
    body += "</section>"
    body += f'<section id="notifications"><h2>{esc(ctx.t("alarms.notifications"))}</h2>'
    if notifications:
        head = "".join(f"<th>{esc(ctx.t(k))}</th>" for k in (
            "notify.time", "notify.channel", "notify.recipient", "notify.status"))
        rows = [
            f'<tr><td class="t">{esc(fmt_short(n.ts_ms, ctx.tz))}</td><td>{esc(n.channel)}</td>'
            f"<td>{esc(mask_recipient(n.recipient))}</td>"
            f'<td>{esc(ctx.t("notify." + n.status))} {esc(n.alarm_id or "")} '
            f"{esc(n.detail)}</td></tr>" for n in notifications]
        body += f'<div class="scroll"><table><tr>{head}</tr>{"".join(rows)}</table></div>'
    else:
        body += f'<p class="muted">{esc(ctx.t("alarms.none_notifications"))}</p>'
    body += "</section>"
    return layout(ctx, ctx.t("alarms.title"), body, "alarms")


# --- plot ------------------------------------------------------------------------------



def _device_rows(ctx: PageContext, bus: BusHealth) -> str:
    rows = []
    for d in bus.devices:
        state = "online" if d.online else "offline"
        failure = ""
        if d.last_failure:
            failure = (f'<div class="last-failure">{esc(ctx.t("devices.last_failure"))}: '
                       f"{esc(d.last_failure)}</div>")
        last_good = (f"{fmt_time(d.last_good_ms, ctx.tz)} ({fmt_age(ctx, d.last_good_ms)})"
                     if d.last_good_ms else ctx.t("devices.never"))
        counts = ctx.t("devices.failures", failures=d.failures,
                       consecutive=d.consecutive_failures, polls=d.polls)
        rows.append(
            f'<li class="pt device {"q-good" if d.online else "q-bad"}" '
            f'data-device="{esc(d.device)}"><span class="name">{esc(d.name or d.device)}</span>'
            f'<span class="badge q">{esc(ctx.t("devices." + state))}</span>'
            f'<span class="meta">{esc(ctx.t("devices.last_good"))}: {esc(last_good)} · '
            f'<span class="counts">{esc(counts)}</span>{failure}</span></li>')
    return "".join(rows)


def devices_page(ctx: PageContext, buses: Sequence[BusHealth],
                 channels: Sequence[ChannelHealth]) -> str:
    inspect = (
        f'<section id="inspect"><form method="post" action="/inspect">'
        f'<input type="hidden" name="csrf" value="{esc(ctx.csrf)}">'
        f'<button class="big" type="submit" id="inspect-button">'
        f'{esc(ctx.t("inspect.button"))}</button></form>'
        f'<p class="muted">{esc(ctx.t("inspect.help"))}</p></section>')
    body = inspect + f'<section id="buses"><h2>{esc(ctx.t("devices.buses"))}</h2>'
    if not buses:
        body += f'<p class="muted">{esc(ctx.t("devices.none"))}</p>'
    for bus in buses:
        state = "connected" if bus.connected else "disconnected"
        body += (f'<h3 data-bus="{esc(bus.bus)}">{esc(bus.bus)} <span class="muted">'
                 f"{esc(bus.kind)}</span> <span class=\"badge {'' if bus.connected else 'stale'}\">"
                 f'{esc(ctx.t("devices." + state))}</span></h3>'
                 f'<ul class="pts">{_device_rows(ctx, bus)}</ul>')
    body += "</section>"
    body += f'<section id="channels"><h2>{esc(ctx.t("devices.channels"))}</h2>'
    if not channels:
        body += f'<p class="muted">{esc(ctx.t("channels.none"))}</p>'
    rows = []
    for c in channels:
        state = "connected" if c.connected else "disconnected"
        oldest = (f'{esc(ctx.t("channel.oldest"))}: {esc(fmt_time(c.oldest_ms, ctx.tz))}'
                  f" ({esc(fmt_age(ctx, c.oldest_ms))}) · " if c.oldest_ms else "")
        last_ack = (f"{fmt_time(c.last_ack_ms, ctx.tz)} ({fmt_age(ctx, c.last_ack_ms)})"
                    if c.last_ack_ms else ctx.t("devices.never"))
        rows.append(
            f'<li class="pt channel {"q-good" if c.connected else "q-bad"}" '
            f'data-channel="{esc(c.channel)}"><span class="name">{esc(c.channel)} '
            f'<span class="muted">{esc(c.kind)}</span></span>'
            f'<span class="badge q">{esc(ctx.t("devices." + state))}</span> '
            f'<span class="backlog">{esc(ctx.t("channel.backlog", n=c.backlog))}</span>'
            f'<span class="meta">{oldest}{esc(ctx.t("channel.last_ack"))}: {esc(last_ack)}'
            f"{(' · ' + esc(c.detail)) if c.detail else ''}</span></li>")
    if rows:
        body += f'<ul class="pts">{"".join(rows)}</ul>'
    body += "</section>"
    return layout(ctx, ctx.t("devices.title"), body, "devices", OVERVIEW_REFRESH_S)


def inspection_page(ctx: PageContext, result: Inspection) -> str:
    seconds = max(0.0, (result.finished_ms - result.requested_ms) / 1000)
    fresh_count = len(result.fresh & {p.point for p in result.points})
    summary = ctx.t("inspect.summary", fresh=fresh_count, total=len(result.points),
                    seconds=f"{seconds:.1f}")
    body = (f'<section id="inspection"><h2>{esc(ctx.t("inspect.title"))}</h2>'
            f'<p id="inspect-summary">{esc(summary)}</p>')
    if not result.complete:
        body += f'<p class="error">{esc(ctx.t("inspect.incomplete"))}</p>'
    rows = []
    for p in result.points:
        fresh = p.point in result.fresh
        marker = (f' <span class="badge {"fresh" if fresh else "stale"} inspected">'
                  f'{esc(ctx.t("inspect.fresh" if fresh else "inspect.not_fresh"))}</span>')
        rows.append(point_row(ctx, p, extra_class="inspected-point", extra_badge=marker))
    body += f'<ul class="pts">{"".join(rows)}</ul>'
    body += (f'<form method="post" action="/inspect"><input type="hidden" name="csrf" '
             f'value="{esc(ctx.csrf)}"><button class="big" type="submit" id="inspect-button">'
             f'{esc(ctx.t("inspect.button"))}</button></form></section>')
    return layout(ctx, ctx.t("inspect.title"), body, "devices")
