"""Alarm lifecycle: one active alarm per (rule, point), and its transitions.

States follow dam-safety alarm practice: raised → escalated / de-escalated between
severities → cleared; acknowledgement is an independent flag set by the keeper or the
platform. Only changes produce transitions, so an alarm is never repeated while active.
Active alarms are restored from the store at start, so a restart neither re-raises what
is already raised nor forgets to clear what cleared while the gateway was down.

A change of side at any severity (a level above the flood limit one poll and below the
dead level the next; a sensor out of range that then goes offline) is a different
condition, so the alarm is cleared and a new one raised: the keeper acknowledges
conditions, not rule ids.
"""

from __future__ import annotations

from rules.base import Verdict
from vocab.model import SEVERITY_RANK, ActiveAlarm, AlarmState, AlarmTransition, Severity

_SEVERITY_WORDS = {
    "en": {"warning": "warning", "alarm": "alarm", "critical": "critical"},
    "zh": {"warning": "预警", "alarm": "报警", "critical": "危急"},
}

# What the value is, as the message names it; '' is the point's own value.
_QUANTITY_WORDS = {
    "en": {"": "", "rate": "rate ", "rainfall": "rainfall ", "residual": "HST residual ",
           "correlation": "level-piezometer correlation r = ",
           "potential": "piezometric potential α = ",
           "drift": "rise of α at similar reservoir levels ",
           "forecast": "time to reach the level ",
           "excess": "excess over the level expected at this reservoir level, in standard "
                     "errors: "},
    "zh": {"": "当前值 ", "rate": "变化速率 ", "rainfall": "累计雨量 ", "residual": "HST残差 ",
           "correlation": "库水位-渗压相关系数 r = ",
           "potential": "渗压系数（位势）α = ",
           "drift": "同库水位下位势升幅 ",
           "forecast": "预计到达该水位还需 ",
           "excess": "渗压水位超出同库水位预期值（标准误差倍数） "},
}

_WHERE = {
    "en": {("above", False): "above", ("below", False): "below",
           ("above", True): "at or above", ("below", True): "at or below"},
    "zh": {("above", False): "高于", ("below", False): "低于",
           ("above", True): "达到或超过", ("below", True): "达到或低于"},
}

_CONDITIONS = {
    "en": {"offline": "sensor offline, no good reading",
           "out_of_range": "value {value}{unit} outside the physical range",
           "stuck": "value stuck at {value}{unit}"},
    "zh": {"offline": "传感器离线，无有效测值",
           "out_of_range": "测值 {value}{unit} 超出物理量程",
           "stuck": "测值停滞于 {value}{unit}"},
}


def _format(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}".rstrip("0").rstrip(".")


def _quantity(value: float | None, unit: str, zh: bool) -> str:
    # Chinese text sets units close up (123.5m); English puts a space before them.
    if not unit:
        return _format(value)
    return f"{_format(value)}{unit}" if zh else f"{_format(value)} {unit}"


def alarm_message(language: str, rule: str, point: str, state: AlarmState,
                  severity: Severity | None, side: str, value: float | None,
                  limit: float | None, unit: str, *, quantity: str = "",
                  inclusive: bool = False) -> str:
    lang = language if language in _SEVERITY_WORDS else "en"
    zh = lang == "zh"
    sev = _SEVERITY_WORDS[lang].get(severity or "", "")
    if quantity == "quality":
        if state == "cleared":
            text = "传感器已恢复正常" if zh else "sensor back to normal"
        else:
            spaced = unit if zh or not unit else f" {unit}"
            condition = _CONDITIONS[lang].get(side, side)
            text = f"{sev}{'：' if zh else ': '}" + condition.format(value=_format(value),
                                                                     unit=spaced)
    else:
        what = _QUANTITY_WORDS[lang].get(quantity, "")
        current = what + _quantity(value, unit, zh)
        if state == "cleared":
            text = f"已恢复正常：{current}" if zh else f"back to normal: {current}"
        else:
            where = _WHERE[lang].get((side, inclusive), "超出" if zh else "beyond")
            bound = _quantity(limit, unit, zh)
            text = (f"{sev}：{current} {where}限值 {bound}" if zh
                    else f"{sev}: {current} {where} limit {bound}")
    return f"{point} {text}（规则 {rule}）" if zh else f"{point} {text} (rule {rule})"


_VIA_WORDS = {"zh": {"mqtt": "平台", "sms": "短信", "page": "本地页面", "button": "按钮"},
              "en": {"mqtt": "platform", "sms": "SMS", "page": "local page",
                     "button": "push button"}}


def acknowledged_message(language: str, alarm_id: str, by: str = "", via: str = "") -> str:
    lang = "zh" if language == "zh" else "en"
    who = ", ".join(x for x in (by, _VIA_WORDS[lang].get(via, via)) if x)
    if lang == "zh":
        return f"{alarm_id} 已确认" + (f"（{who.replace(', ', '，')}）" if who else "")
    return f"{alarm_id} acknowledged" + (f" ({who})" if who else "")


def orphan_message(language: str, rule: str, point: str) -> str:
    if language == "zh":
        return f"{point} 报警已解除：规则 {rule} 已从配置中删除"
    return f"{point} alarm cleared: rule {rule} is no longer configured"


def is_external(rule: str) -> bool:
    """An alarm raised outside the rules (a service's equipment alarm, such as a siren's
    relay that does not answer): its rule id holds a ':', which no configured rule's can
    (ids are [A-Za-z0-9_-]), and the service that raised it also clears it."""
    return ":" in rule


class AlarmBook:
    """The active alarms of the gateway and the transitions verdicts cause."""

    def __init__(self, language: str = "en") -> None:
        self.language = language
        self.active: dict[tuple[str, str], ActiveAlarm] = {}

    def restore(self, alarm: ActiveAlarm) -> None:
        self.active[(alarm.rule, f"{alarm.device}/{alarm.point}")] = alarm

    def apply(self, rule: str, device: str, point: str, verdict: Verdict, ts_ms: int,
              unit: str) -> AlarmTransition | None:
        """The transition a verdict causes, for rules with a single side of limits.

        A change of side yields two transitions (cleared, raised): use ``update``, which
        returns both; this returns the last one.
        """
        transitions = self.update(rule, device, point, verdict, ts_ms, unit)
        return transitions[-1] if transitions else None

    def update(self, rule: str, device: str, point: str, verdict: Verdict, ts_ms: int,
               unit: str) -> list[AlarmTransition]:
        """Every transition a verdict causes (none, one, or cleared + raised)."""
        key = (rule, f"{device}/{point}")
        current = self.active.get(key)
        new = verdict.severity
        if current is None and new is None:
            return []
        if current is not None and new == current.severity and verdict.direction == current.side:
            return []
        out: list[AlarmTransition] = []
        if current is not None and (new is None or verdict.direction != current.side):
            alarm = self.active.pop(key)
            out.append(self._transition(alarm, "cleared", verdict, ts_ms, unit,
                                        limit=alarm.limit, side=alarm.side))
            if new is None:
                return out
            current = None
        assert new is not None
        if current is None:
            alarm = ActiveAlarm(f"{rule}@{ts_ms}", rule, device, point, new,
                                verdict.direction, verdict.limit, raised_ms=ts_ms)
            self.active[key] = alarm
            state: AlarmState = "raised"
        else:
            alarm = current
            rising = SEVERITY_RANK[new] > SEVERITY_RANK[alarm.severity]
            state = "escalated" if rising else "de-escalated"
            alarm.severity, alarm.side, alarm.limit = new, verdict.direction, verdict.limit
        transition = self._transition(alarm, state, verdict, ts_ms, unit, limit=verdict.limit,
                                      side=alarm.side)
        # The book's alarm reads as the store's row does (edge/store.py): whoever shows
        # the active alarms (the keeper's page) sees when, at what value and why.
        alarm.state, alarm.updated_ms = state, ts_ms
        alarm.value, alarm.message = verdict.value, transition.message
        out.append(transition)
        return out

    def _transition(self, alarm: ActiveAlarm, state: AlarmState, verdict: Verdict,
                    ts_ms: int, unit: str, *, limit: float | None,
                    side: str) -> AlarmTransition:
        point = f"{alarm.device}/{alarm.point}"
        message = alarm_message(self.language, alarm.rule, point, state, alarm.severity,
                                side, verdict.value, limit, unit, quantity=verdict.quantity,
                                inclusive=verdict.inclusive)
        return AlarmTransition(alarm.alarm_id, alarm.rule, alarm.device, alarm.point,
                               alarm.severity, state, verdict.value, limit, ts_ms, message,
                               side)

    def clear_orphan(self, key: tuple[str, str], ts_ms: int) -> AlarmTransition:
        """Clear an alarm whose rule is no longer configured: nothing else ever would."""
        alarm = self.active.pop(key)
        point = f"{alarm.device}/{alarm.point}"
        return AlarmTransition(alarm.alarm_id, alarm.rule, alarm.device, alarm.point,
                               alarm.severity, "cleared", None, alarm.limit, ts_ms,
                               orphan_message(self.language, alarm.rule, point), alarm.side)

    def apply_external(self, t: AlarmTransition) -> bool:
        """Take an equipment alarm's ``raised`` or ``cleared`` into the book, so that it
        can be acknowledged like any other; False when it changes nothing (raised while
        already active, cleared while not)."""
        if not is_external(t.rule) or t.state not in ("raised", "cleared"):
            raise ValueError(f"not an equipment alarm's raised or cleared: {t.rule} {t.state}")
        key = (t.rule, f"{t.device}/{t.point}")
        if t.state == "cleared":
            return self.active.pop(key, None) is not None
        if key in self.active or t.severity is None:
            return False
        self.active[key] = ActiveAlarm(t.alarm_id, t.rule, t.device, t.point, t.severity,
                                       t.side, t.limit, raised_ms=t.ts_ms, updated_ms=t.ts_ms,
                                       value=t.value, message=t.message)
        return True

    def find(self, alarm_id: str) -> ActiveAlarm | None:
        return next((a for a in self.active.values() if a.alarm_id == alarm_id), None)

    def acknowledge(self, alarm_id: str, ts_ms: int, by: str = "",
                    via: str = "") -> AlarmTransition | None:
        """Who acknowledged and how travel with the event (``by``, ``via``)."""
        alarm = self.find(alarm_id)
        if alarm is None or alarm.acked:
            return None
        alarm.acked, alarm.acked_by, alarm.acked_via = True, by, via
        return AlarmTransition(alarm.alarm_id, alarm.rule, alarm.device, alarm.point,
                               alarm.severity, "acknowledged", None, alarm.limit, ts_ms,
                               acknowledged_message(self.language, alarm.alarm_id, by, via),
                               alarm.side, {"by": by, "via": via})
