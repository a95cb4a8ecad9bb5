"""Threshold rule: multi-level high/low limits with hysteresis and on/off delays.

Models the basic practice of reservoir alarming (domain reference §4): a water level above
the flood-limit level (strictly: 超汛限 means level > 汛限水位), escalating at the design
and check flood levels; or a level below the dead level; or a piezometric level above the
design phreatic line, a hydraulic gradient above the allowable gradient (on a derived
point). A value hovering at a limit must not flap, so once a level is reached it is held
until the value falls back past the limit by ``hysteresis``; optional delays require a
level to persist for N samples or a duration before it is raised or stepped down.

```yaml
- id: level-high
  type: threshold
  point: level-1/water_level
  high: [{severity: warning, value: flood_limit}, {severity: alarm, value: design_flood}]
  low: [{severity: warning, value: dead}]
  hysteresis: 0.05
  on_delay: {samples: 2}          # optional; or {duration: 10min}
  off_delay: {duration: 30min}    # optional
```
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

from rules.base import (
    Context,
    Judgement,
    RuleEnv,
    RuleShape,
    RuleType,
    Stale,
    Verdict,
    input_problem,
)
from rules.configtypes import Delay, Limit, LimitsConfig
from rules.limits import Debounce, Level, LimitLadder, debounce
from vocab.ids import Ident, PointRef
from vocab.model import Reading, Severity

__all__ = ["Level", "ThresholdConfig", "ThresholdRule", "build"]


class ThresholdConfig(LimitsConfig, RuleShape):
    id: Ident
    type: Literal["threshold"]
    point: PointRef


def resolve(levels: Mapping[str, float], value: float | str) -> float:
    """A limit's number: itself, or the named site level it refers to."""
    return float(levels[value]) if isinstance(value, str) else float(value)


def ladder_levels(limits: Sequence[Limit], levels: Mapping[str, float]) -> list[Level]:
    return [Level(lv.severity, resolve(levels, lv.value)) for lv in limits]


class LimitJudge:
    """A ladder of limits plus delays over one stream of values: a small state machine.

    Threshold, rate, HST-residual and correlation rules differ only in what value they
    feed it and how the verdict is worded.
    """

    def __init__(self, ladder: LimitLadder, debounce: Debounce) -> None:
        self.ladder = ladder
        self.debounce = debounce

    @property
    def held(self) -> Severity | None:
        return self.debounce.severity

    @property
    def held_side(self) -> str:
        return self.debounce.side

    def restore(self, severity: Severity | None, side: str) -> None:
        self.debounce.restore(severity, side)

    def step(self, ts_ms: int, value: float) -> tuple[Severity | None, str, float | None]:
        """The level in force after this value: (severity, side, its limit)."""
        level, side = self.ladder.target(value, self.held, self.held_side)
        self.debounce.step(ts_ms, level.severity if level else None, side)
        severity = self.debounce.severity
        if severity is None:
            return None, "", self.ladder.first_limit
        return severity, self.debounce.side, self.ladder.limit_of(severity, self.debounce.side)


class ThresholdRule:
    def __init__(self, rule_id: str, point: str, high: Sequence[Level], low: Sequence[Level],
                 hysteresis: float, *, on_delay: Delay | None = None,
                 off_delay: Delay | None = None) -> None:
        self.id = rule_id
        self.point = point
        self.inputs = (point,)
        self.alarm_points = (point,)
        self.limits = LimitJudge(LimitLadder(high, low, hysteresis),
                                 debounce(on_delay, off_delay))

    @property
    def held(self) -> Severity | None:
        return self.limits.held

    def restore(self, severity: Severity | None, side: str) -> None:
        """Resume from a persisted active alarm after a restart."""
        self.limits.restore(severity, side)

    def restore_alarm(self, point: str, severity: Severity, side: str) -> None:
        self.restore(severity, side)

    def evaluate(self, reading: Reading) -> Verdict | None:
        """The verdict on one reading, or None when it cannot be judged (not good)."""
        if reading.quality != "good" or reading.value is None:
            return None
        severity, side, limit = self.limits.step(reading.ts_ms, reading.value)
        return Verdict(severity, reading.value, limit, side)

    def judge(self, reading: Reading, ctx: Context) -> Sequence[Judgement]:
        problem = input_problem(reading)
        if problem is not None:
            return [Stale(problem)]
        verdict = self.evaluate(reading)
        return [verdict] if verdict is not None else []


def limit_judge(high: Sequence[Limit], low: Sequence[Limit], hysteresis: float,
                env: RuleEnv, on_delay: Delay | None = None, off_delay: Delay | None = None,
                *, inclusive: bool = False) -> LimitJudge:
    """The judge of configured limits, site level names resolved."""
    ladder = LimitLadder(ladder_levels(high, env.levels), ladder_levels(low, env.levels),
                         hysteresis, inclusive=inclusive)
    return LimitJudge(ladder, debounce(on_delay, off_delay))


def build(config: ThresholdConfig, env: RuleEnv) -> ThresholdRule:
    return ThresholdRule(config.id, config.point, ladder_levels(config.high, env.levels),
                         ladder_levels(config.low, env.levels), config.hysteresis,
                         on_delay=config.on_delay, off_delay=config.off_delay)


RULE_TYPE = RuleType(ThresholdConfig, build)
