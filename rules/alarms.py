"""Alarm lifecycle: one active alarm per (rule, point), and its transitions.

States follow dam-safety alarm practice: raised → escalated / de-escalated between
severities → cleared; acknowledgement is an independent flag set by the keeper or the
platform. Only changes produce transitions, so an alarm is never repeated while active.
Active alarms are restored from the store at start, so a restart neither re-raises what
is already raised nor forgets to clear what cleared while the gateway was down.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge.model import SEVERITY_RANK, AlarmState, AlarmTransition, Severity
from rules.base import Verdict

_SEVERITY_WORDS = {
    "en": {"warning": "warning", "alarm": "alarm", "critical": "critical"},
    "zh": {"warning": "预警", "alarm": "报警", "critical": "危急"},
}


@dataclass
class ActiveAlarm:
    alarm_id: str
    rule: str
    device: str
    point: str
    severity: Severity
    side: str
    limit: float | None
    acked: bool = False


def _format(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}".rstrip("0").rstrip(".")


def alarm_message(language: str, rule: str, point: str, state: AlarmState,
                  severity: Severity | None, side: str, value: float | None,
                  limit: float | None, unit: str) -> str:
    words = _SEVERITY_WORDS.get(language, _SEVERITY_WORDS["en"])
    sev = words.get(severity or "", "")
    if language == "zh":
        if state == "cleared":
            return f"{point} 已恢复正常：当前值 {_format(value)}{unit}（规则 {rule}）"
        where = {"above": "高于", "below": "低于"}.get(side, "超出")
        return (f"{point} {sev}：当前值 {_format(value)}{unit} {where}限值 "
                f"{_format(limit)}{unit}（规则 {rule}）")
    if state == "cleared":
        return f"{point} back to normal: {_format(value)} {unit} (rule {rule})".replace(" )", ")")
    where = {"above": "above", "below": "below"}.get(side, "beyond")
    return (f"{point} {sev}: {_format(value)} {unit} {where} limit {_format(limit)} {unit} "
            f"(rule {rule})")


class AlarmBook:
    """The active alarms of the gateway and the transitions verdicts cause."""

    def __init__(self, language: str = "en") -> None:
        self.language = language
        self.active: dict[tuple[str, str], ActiveAlarm] = {}

    def restore(self, alarm: ActiveAlarm) -> None:
        self.active[(alarm.rule, f"{alarm.device}/{alarm.point}")] = alarm

    def apply(self, rule: str, device: str, point: str, verdict: Verdict, ts_ms: int,
              unit: str) -> AlarmTransition | None:
        key = (rule, f"{device}/{point}")
        current = self.active.get(key)
        new = verdict.severity
        if current is None and new is None:
            return None
        if current is not None and new == current.severity and verdict.direction == current.side:
            return None
        if current is None:
            assert new is not None
            alarm = ActiveAlarm(f"{rule}@{ts_ms}", rule, device, point, new,
                                verdict.direction, verdict.limit)
            self.active[key] = alarm
            state: AlarmState = "raised"
        elif new is None:
            alarm = self.active.pop(key)
            return AlarmTransition(
                alarm.alarm_id, rule, device, point, alarm.severity, "cleared", verdict.value,
                alarm.limit, ts_ms,
                alarm_message(self.language, rule, f"{device}/{point}", "cleared",
                              alarm.severity, alarm.side, verdict.value, alarm.limit, unit),
                alarm.side,
            )
        else:
            alarm = current
            rising = SEVERITY_RANK[new] > SEVERITY_RANK[alarm.severity]
            state = "escalated" if rising else "de-escalated"
            alarm.severity, alarm.side, alarm.limit = new, verdict.direction, verdict.limit
        return AlarmTransition(
            alarm.alarm_id, rule, device, point, alarm.severity, state, verdict.value,
            verdict.limit, ts_ms,
            alarm_message(self.language, rule, f"{device}/{point}", state, alarm.severity,
                          alarm.side, verdict.value, verdict.limit, unit),
            alarm.side,
        )

    def acknowledge(self, alarm_id: str, ts_ms: int) -> AlarmTransition | None:
        for alarm in self.active.values():
            if alarm.alarm_id == alarm_id:
                if alarm.acked:
                    return None
                alarm.acked = True
                return AlarmTransition(alarm.alarm_id, alarm.rule, alarm.device, alarm.point,
                                       alarm.severity, "acknowledged", None, alarm.limit, ts_ms,
                                       f"{alarm.alarm_id} acknowledged", alarm.side)
        return None
