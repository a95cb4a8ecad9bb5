"""Builds the configured rules and runs them over each poll's readings."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import structlog

from edge.config import GatewaySettings, resolve_level
from edge.config import ThresholdRule as ThresholdConfig
from edge.model import AlarmTransition, Reading
from rules.alarms import ActiveAlarm, AlarmBook
from rules.base import Rule
from rules.threshold import Level, ThresholdRule

log = structlog.get_logger("rules.engine")


@dataclass(frozen=True, slots=True)
class Evaluation:
    """What the rules made of one poll: the readings to store (with any quality the
    screening changed, plus derived readings) and the alarm transitions they caused."""

    readings: tuple[Reading, ...]
    transitions: list[AlarmTransition]


def build_rule(settings: GatewaySettings, config: ThresholdConfig) -> Rule:
    high = [Level(lv.severity, resolve_level(settings, lv.value)) for lv in config.high]
    low = [Level(lv.severity, resolve_level(settings, lv.value)) for lv in config.low]
    return ThresholdRule(config.id, config.point, high, low, config.hysteresis)


class RuleEngine:
    def __init__(self, settings: GatewaySettings, active: Iterable[ActiveAlarm] = ()) -> None:
        self.book = AlarmBook(settings.site.language)
        self.by_point: dict[str, list[Rule]] = defaultdict(list)
        self.units = {f"{d.id}/{p.id}": p.unit for d, p in settings.iter_points()}
        for config in settings.rules:
            rule = build_rule(settings, config)
            self.by_point[rule.point].append(rule)
        rules = {r.id: r for rs in self.by_point.values() for r in rs}
        for alarm in active:
            rule = rules.get(alarm.rule)
            if rule is None or rule.point != f"{alarm.device}/{alarm.point}":
                continue  # the rule was removed from the config; see clear_orphans
            self.book.restore(alarm)
            if isinstance(rule, ThresholdRule):
                rule.restore(alarm.severity, alarm.side)

    def evaluate(self, readings: Sequence[Reading]) -> Evaluation:
        transitions: list[AlarmTransition] = []
        for reading in readings:
            for rule in self.by_point.get(reading.key, ()):
                try:
                    verdict = rule.evaluate(reading)
                    if verdict is None:
                        continue
                    transition = self.book.apply(rule.id, reading.device, reading.point,
                                                 verdict, reading.ts_ms,
                                                 self.units.get(reading.key, ""))
                except Exception:  # a broken rule must not stop the others or the poll
                    log.exception("rule_failed", rule=rule.id, point=reading.key)
                    continue
                if transition is not None:
                    transitions.append(transition)
        return Evaluation(tuple(readings), transitions)
