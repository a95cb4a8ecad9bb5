"""The keeper's page in Chinese (default) and English.

Terms follow the domain reference (/work/shared/domain/reservoir.md): 汛限水位, 设计洪水位,
校核洪水位, 坝顶高程 (§2.4), 超高 for freeboard, 渗压 for seepage pressure, 一键巡库 for the
one-click inspection. Every text a page or an error shows comes from here, so a missing
translation fails the i18n test rather than showing a key to the keeper.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["LANGUAGES", "Language", "has_text", "text"]

Language = Literal["zh", "en"]
LANGUAGES: tuple[Language, ...] = ("zh", "en")

# key: (zh, en). Placeholders use str.format names.
TEXTS: dict[str, tuple[str, str]] = {
    # navigation and frame
    "nav.overview": ("概览", "Overview"),
    "nav.alarms": ("报警", "Alarms"),
    "nav.devices": ("设备", "Devices"),
    "page.generated": ("页面生成于 {time}", "Page generated at {time}"),
    "page.offline_note": ("本页面由网关直接提供，无需互联网。",
                          "Served by the gateway itself; no internet needed."),
    "page.auto_refresh": ("每 {seconds} 秒自动刷新", "Refreshes every {seconds} s"),
    "page.active_alarms": ("当前报警 {count} 条", "{count} active alarm(s)"),
    "page.no_active_alarms": ("当前无报警", "No active alarm"),
    # overview
    "overview.title": ("概览", "Overview"),
    "section.level": ("库水位", "Reservoir level"),
    "section.rainfall": ("雨量", "Rainfall"),
    "section.seepage": ("渗压", "Piezometers"),
    "section.gradient": ("渗透坡降", "Hydraulic gradients"),
    "section.displacement": ("位移与沉降", "Displacement and settlement"),
    "section.other": ("其他测点", "Other points"),
    "level.current": ("当前水位", "Current level"),
    "level.freeboard": ("超高（坝顶 − 水位）", "Freeboard (crest − level)"),
    "level.to_level": ("距该水位", "Level minus this"),
    "level.above": ("高于", "above"),
    "level.below": ("低于", "below"),
    "level.none": ("未配置库水位测点", "No reservoir level point configured"),
    "levels.dead": ("死水位", "Dead level"),
    "levels.flood_limit": ("汛限水位", "Flood-limit level"),
    "levels.normal_pool": ("正常蓄水位", "Normal pool level"),
    "levels.design_flood": ("设计洪水位", "Design flood level"),
    "levels.check_flood": ("校核洪水位", "Check flood level"),
    "levels.crest": ("坝顶高程", "Crest"),
    "rain.1h": ("近 1 小时", "Last 1 h"),
    "rain.3h": ("近 3 小时", "Last 3 h"),
    "rain.6h": ("近 6 小时", "Last 6 h"),
    "rain.12h": ("近 12 小时", "Last 12 h"),
    "rain.24h": ("近 24 小时", "Last 24 h"),
    "rain.day": ("雨量日（8 时起）", "Rainfall day (from 08:00)"),
    "rain.none": ("未配置雨量累计", "No rainfall sums configured"),
    "points.none": ("无测点", "No points"),
    "col.point": ("测点", "Point"),
    "col.value": ("数值", "Value"),
    "col.time": ("时间", "Time"),
    "col.quality": ("质量", "Quality"),
    # qualities and freshness
    "quality.good": ("正常", "good"),
    "quality.suspect": ("可疑", "suspect"),
    "quality.bad": ("无效", "bad"),
    "quality.never": ("未读取", "never read"),
    "quality.stale": ("已过期", "stale"),
    "age.seconds": ("{n} 秒前", "{n} s ago"),
    "age.minutes": ("{n} 分钟前", "{n} min ago"),
    "age.hours": ("{n} 小时前", "{n} h ago"),
    "age.days": ("{n} 天前", "{n} d ago"),
    "reason": ("原因：{reason}", "reason: {reason}"),
    # alarms
    "alarms.title": ("报警", "Alarms"),
    "alarms.active": ("当前报警", "Active alarms"),
    "alarms.none_active": ("当前无报警。", "No active alarm."),
    "alarms.history": ("近 30 天报警记录", "Alarm history, last 30 days"),
    "alarms.none_history": ("近 30 天无报警记录。", "No alarm in the last 30 days."),
    "alarms.history_truncated": ("只显示最近 {n} 条。", "Only the latest {n} are shown."),
    "alarms.notifications": ("近 30 天已发通知", "Notifications sent, last 30 days"),
    "alarms.none_notifications": ("近 30 天无通知。", "No notification in the last 30 days."),
    "alarm.since": ("起始", "Since"),
    "alarm.value": ("数值", "Value"),
    "alarm.limit": ("限值", "Limit"),
    "alarm.acked_by": ("已由 {by} 于 {time} 确认", "Acknowledged by {by} at {time}"),
    "alarm.acked_unknown": ("已确认", "Acknowledged"),
    "alarm.unacked": ("未确认", "Not acknowledged"),
    "alarm.rule": ("规则", "Rule"),
    "alarm.by": ("确认人", "By"),
    # how an alarm was acknowledged (the alarm event's ``via``)
    "via.mqtt": ("平台", "platform"),
    "via.sms": ("短信", "SMS"),
    "via.page": ("本地页面", "local page"),
    "via.button": ("按钮", "push button"),
    "alarm.state": ("状态", "State"),
    "alarm.severity": ("等级", "Severity"),
    "alarm.message": ("说明", "Message"),
    "severity.warning": ("预警", "warning"),
    "severity.alarm": ("报警", "alarm"),
    "severity.critical": ("紧急", "critical"),
    "state.raised": ("触发", "raised"),
    "state.escalated": ("升级", "escalated"),
    "state.de-escalated": ("降级", "de-escalated"),
    "state.cleared": ("解除", "cleared"),
    "state.acknowledged": ("确认", "acknowledged"),
    "notify.time": ("时间", "Time"),
    "notify.channel": ("渠道", "Channel"),
    "notify.recipient": ("接收人", "Recipient"),
    "notify.status": ("状态", "Status"),
    "notify.sent": ("已发送", "sent"),
    "notify.delivered": ("已送达", "delivered"),
    "notify.failed": ("失败", "failed"),
    "notify.pending": ("待发送", "pending"),
    # acknowledgement
    "ack.title": ("确认报警", "Acknowledge"),
    "ack.name": ("确认人姓名", "Your name"),
    "ack.pin": ("PIN 码", "PIN"),
    "ack.submit": ("确认", "Acknowledge"),
    "ack.done": ("报警 {alarm} 已确认。", "Alarm {alarm} acknowledged."),
    "ack.disabled": ("未配置 PIN，本页面不能确认报警（只读）。",
                     "No PIN is configured: alarms cannot be acknowledged here (read-only)."),
    "ack.wrong_pin": ("PIN 码错误，还可尝试 {left} 次。", "Wrong PIN; {left} attempt(s) left."),
    "ack.locked": ("PIN 错误次数过多，已锁定，请 {minutes} 分钟后再试。",
                   "Too many wrong PINs: locked, try again in {minutes} min."),
    "ack.not_active": ("报警 {alarm} 不是未确认的当前报警（可能已确认或已解除）。",
                       "Alarm {alarm} is not an unacknowledged active alarm (already "
                       "acknowledged or cleared)."),
    "ack.failed": ("确认未能保存，请重试：{detail}", "The acknowledgement was not stored, "
                   "try again: {detail}"),
    "ack.bad_name": ("请填写确认人姓名（1–40 个字符，不含控制字符）。",
                     "Give your name (1-40 characters, no control characters)."),
    "ack.bad_pin": ("请填写 PIN 码。", "Give the PIN."),
    "ack.bad_alarm": ("报警编号无效。", "Invalid alarm id."),
    # plots
    "plot.title": ("{point} 过程线", "{point}: plot"),
    "plot.24h": ("24 小时", "24 h"),
    "plot.7d": ("7 天", "7 days"),
    "plot.30d": ("30 天", "30 days"),
    "plot.range": ("{start} 至 {end}", "{start} to {end}"),
    "plot.count": ("{good} 个正常值，{suspect} 个可疑值，{bad} 个无效值，{gaps} 处缺测",
                   "{good} good, {suspect} suspect, {bad} bad readings; {gaps} gap(s)"),
    "plot.gap_rule": ("缺测：相邻读数间隔超过 {gap}，或有无效值。",
                      "Gap: more than {gap} between readings, or a bad reading."),
    "plot.no_data": ("该时段无数据", "No data in this period"),
    "plot.truncated": ("读数过多，只绘制了前 {n} 个。", "Too many readings: only the first "
                       "{n} are drawn."),
    "plot.legend_limit": ("报警限值", "alarm limit"),
    "plot.off_scale": ("超出图幅", "off scale"),
    "plot.back": ("返回概览", "Back to overview"),
    # devices
    "devices.title": ("设备", "Devices"),
    "devices.buses": ("总线与设备", "Buses and devices"),
    "devices.channels": ("上传通道", "Uplink channels"),
    "devices.none": ("无总线。", "No bus."),
    "devices.online": ("在线", "online"),
    "devices.offline": ("离线", "offline"),
    "devices.connected": ("已连接", "connected"),
    "devices.disconnected": ("未连接", "not connected"),
    "devices.last_good": ("最后成功采集", "Last good poll"),
    "devices.failures": ("失败 {failures} 次（连续 {consecutive} 次），共采集 {polls} 次",
                         "{failures} failures ({consecutive} in a row) in {polls} polls"),
    "devices.last_failure": ("最后失败原因", "Last failure"),
    "devices.never": ("从未", "never"),
    "channel.backlog": ("待发 {n} 条", "{n} waiting"),
    "channel.oldest": ("最早待发", "Oldest waiting"),
    "channel.last_ack": ("最后确认", "Last acknowledgement"),
    "channels.none": ("无上传通道。", "No uplink channel."),
    # inspection
    "inspect.button": ("一键巡库", "Inspect now"),
    "inspect.help": ("立即采集所有设备，并逐点显示结果。",
                     "Polls every device now and shows the result point by point."),
    "inspect.title": ("巡库结果", "Inspection result"),
    "inspect.summary": ("{fresh}/{total} 个测点已更新，用时 {seconds} 秒。",
                        "{fresh} of {total} points read, in {seconds} s."),
    "inspect.incomplete": ("部分设备在时限内未应答。", "Some devices did not answer in time."),
    "inspect.fresh": ("本次已读", "read now"),
    "inspect.not_fresh": ("本次未读到", "not read now"),
    # errors
    "error.title": ("请求有误", "Bad request"),
    "error.back": ("返回概览", "Back to overview"),
    "error.not_found": ("没有这个页面：{path}", "No such page: {path}"),
    "error.method": ("此页面不接受 {method} 请求。", "This page does not accept {method}."),
    "error.unknown_point": ("未知测点：{point}", "Unknown point: {point}"),
    "error.query_too_long": ("查询字符串过长（{length} 字符，上限 {limit}）。",
                             "Query string too long ({length} characters, limit {limit})."),
    "error.body_too_large": ("提交内容过大（上限 {limit} 字节）。",
                             "Request body too large (limit {limit} bytes)."),
    "error.unknown_param": ("未知参数：{names}（可用：{known}）",
                            "Unknown parameter(s): {names} (known: {known})"),
    "error.repeated_param": ("参数 {name} 出现了多次。", "Parameter {name} given more than "
                             "once."),
    "error.bad_period": ("时段 {value} 无效，可选：{known}", "Period {value} is invalid; "
                         "choose one of {known}"),
    "error.bad_time": ("时间 {name}={value} 无效：请用 2026-12-05T08:00 或毫秒数，"
                       "且在 2000 年至明天之间。",
                       "Time {name}={value} is invalid: use 2026-12-05T08:00 or epoch ms, "
                       "between 2000 and tomorrow."),
    "error.bad_range": ("时间范围无效：起点须早于终点，且跨度不超过 {days} 天。",
                        "Invalid time range: from must be before to, spanning at most "
                        "{days} days."),
    "error.csrf": ("表单已过期或来源无效，请刷新页面后重试。",
                   "The form expired or did not come from this page: reload it and try "
                   "again."),
    "error.form": ("表单内容无效：{detail}", "Invalid form: {detail}"),
    "error.busy": ("网关正忙，请稍后重试。", "The gateway is busy; try again shortly."),
    "error.timeout": ("网关未能及时响应，请稍后重试。",
                      "The gateway did not answer in time; try again shortly."),
    "error.internal": ("页面出错，已记录。请稍后重试。",
                       "The page failed; this was logged. Try again shortly."),
}


def has_text(key: str) -> bool:
    return key in TEXTS


def text(lang: Language, key: str, **values: object) -> str:
    """The text of ``key`` in the language, with its placeholders filled."""
    zh, en = TEXTS[key]
    template = zh if lang == "zh" else en
    return template.format(**values) if values else template
