"""Time-to-level rule: hours until the reservoir reaches its characteristic levels.

Overtopping is the first cause of earth-dam failure (domain reference §0), and in a flood
the keeper's question is not "how high" but "how long until": until the flood-limit
level, the design and check flood levels, the crest (§2.4). At each reading of the level
the rule takes the rise rate as the least-squares slope over ``window`` (the closed
window [t − W, t] of the rate rule, rules.rate: at 0.01 m resolution a window under
about 30 min is mostly quantisation noise) and publishes, for each target level,

    hours = (target − L) / rate        (§2.4: only when the rate is > 0)

as a derived reading ``{device}/hours_to_{target}`` in h (the device defaults to the rule
id), 0 once the level is at or above the target. A target's ``alarms`` raise when it
would be reached within their time (crest within 3 h: ≤ 3 h, the time included).

The forecast is held, ``bad`` with the reason, whenever the rate means nothing:

* ``not_rising``: the rate is under ``min_rate`` (falling, or too slow to tell from the
  gauge's resolution). The target will not be reached at the current rate, so its alarm
  clears: a crest alarm raised on the rising limb must end after the peak, not stay
  held until the next flood;
* ``insufficient_history``: fewer than ``min_samples`` readings in the window, or
  readings covering less than half of it;
* ``stale_gauge``: the gauge was silent for more than ``max_gap`` before this reading;
* the reading itself is not good (``suspect_input``: a jump, a stuck gauge; ``bad_input``).

In the last three cases the forecast's alarm is held, as for any doubtful input.

Forecasts are rounded to 10⁻⁶ h (3.6 ms), so that a level meant to reach the crest in
exactly 3 h is not pushed past a 3 h limit by the last bit of a float.

The forecast is a straight line through the recent rise: rain still running off the
catchment will steepen it, so pair it with the rainfall signals (an ``accumulation``
rule) rather than read it alone.

```yaml
- id: level-forecast
  type: time_to_level
  point: level-1/water_level
  window: 1h
  targets:
    - {level: flood_limit}
    - {level: design_flood, alarms: [{severity: warning, within: 6h}]}
    - {level: check_flood, alarms: [{severity: alarm, within: 3h}]}
    - {level: crest, alarms: [{severity: alarm, within: 6h}, {severity: critical, within: 3h}]}
```
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from rules.base import (
    Context,
    HistoryProvider,
    Judgement,
    RuleEnv,
    RuleShape,
    RuleType,
    SiteView,
    Stale,
    Verdict,
    input_problem,
)
from rules.configtypes import Delay
from rules.limits import Level, LimitLadder, debounce
from rules.rate import RateWindow, rate_factor
from rules.threshold import LimitJudge, resolve
from vocab.checking import PathKey, Report
from vocab.configbase import StrictModel
from vocab.durations import Duration
from vocab.ids import Ident, PointRef, SeverityName
from vocab.model import Reading, Severity

__all__ = ["NOT_RISING", "TimeToLevelConfig", "TimeToLevelRule", "build"]

NOT_RISING = "not_rising"


class Within(StrictModel):
    severity: SeverityName
    within: Duration


class Target(StrictModel):
    # A site level's name (crest, check_flood, ...) or an elevation in m.
    level: float | Ident
    # Point id of the forecast; default hours_to_<level name> (required for a number).
    name: Ident | None = None
    alarms: list[Within] = Field(default_factory=list)

    @field_validator("alarms")
    @classmethod
    def _one_per_severity(cls, alarms: list[Within], info: ValidationInfo) -> list[Within]:
        severities = [a.severity for a in alarms]
        if len(set(severities)) != len(severities):
            raise ValueError("two alarms of one severity: one per severity")
        return alarms

    @model_validator(mode="after")
    def _named(self) -> Target:
        if self.name is None and not isinstance(self.level, str):
            raise ValueError(f"a target at {self.level:g} m needs a 'name' for its forecast")
        return self

    @property
    def point_id(self) -> str:
        return self.name or f"hours_to_{self.level}"


class TimeToLevelConfig(StrictModel, RuleShape):
    id: Ident
    type: Literal["time_to_level"]
    point: PointRef
    device: Ident | None = None
    window: Duration = 3600.0
    min_samples: int = Field(default=6, ge=3, le=100_000)
    # m/h: below it the level is not rising meaningfully (1 cm/h: the gauge's resolution
    # per hour).
    min_rate: float = Field(default=0.01, gt=0)
    # Longest silence of the gauge before a reading; default three poll intervals.
    max_gap: Duration | None = None
    targets: list[Target] = Field(min_length=1)
    hysteresis: float = Field(default=0.0, ge=0)  # h
    on_delay: Delay | None = None
    off_delay: Delay | None = None

    @model_validator(mode="after")
    def _distinct(self) -> TimeToLevelConfig:
        names = [t.point_id for t in self.targets]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"two forecasts named {', '.join(repeated)}: give them "
                             "distinct names")
        return self

    @property
    def virtual_device(self) -> str:
        return self.device or self.id

    def level_refs(self) -> Iterator[tuple[PathKey, str]]:
        for index, target in enumerate(self.targets):
            if isinstance(target.level, str):
                yield ("targets", index, "level"), target.level

    def history_needs(self) -> Iterator[tuple[PathKey, float]]:
        yield ("window",), self.window

    def outputs(self) -> list[str]:
        return [f"{self.virtual_device}/{t.point_id}" for t in self.targets]

    def output_unit(self) -> str:
        return "h"

    def check(self, site: SiteView, report: Report) -> None:
        unit = site.units.get(self.point)
        if self.point in site.known and unit != "m":
            # Targets are site levels in m, and min_rate is in m/h.
            report(("point",), f"rule {self.id!r}: point {self.point!r} is in {unit!r}; "
                               "time to a level needs a level in m")


class TimeToLevelRule:
    """Producer of the forecasts at each level reading, and judge of their alarms."""

    def __init__(self, config: TimeToLevelConfig, env: RuleEnv) -> None:
        self.id = config.id
        self.point = config.point
        self.source = config.point
        self.device = config.virtual_device
        self.targets = [(f"{self.device}/{t.point_id}", t.point_id, resolve(env.levels, t.level))
                        for t in config.targets]
        self.outputs = tuple(key for key, _, _ in self.targets)
        self.inputs = self.outputs
        self.window = RateWindow("least_squares", config.window,
                                 rate_factor("m/h", env.units.get(config.point, "m")),
                                 config.min_samples)
        self.min_rate = config.min_rate
        self.max_gap_ms = (int(config.max_gap * 1000) if config.max_gap
                           else env.stale_after_ms(config.point))
        self.history: HistoryProvider | None = env.history
        self.last_ms: int | None = None
        self.judges: dict[str, LimitJudge] = {}
        for target, (key, _, _) in zip(config.targets, self.targets, strict=True):
            if target.alarms:
                # Low limits on the hours, reached at ≤: "within 3 h" includes 3 h.
                levels = [Level(a.severity, a.within / 3600.0) for a in target.alarms]
                self.judges[key] = LimitJudge(
                    LimitLadder([], levels, config.hysteresis, inclusive=True),
                    debounce(config.on_delay, config.off_delay))
        self.alarm_points = tuple(self.judges)

    def restore_alarm(self, point: str, severity: Severity, side: str) -> None:
        if point in self.judges:
            self.judges[point].restore(severity, side)

    # --- producing the forecasts -----------------------------------------------------

    def _seed(self, now_ms: int) -> None:
        assert self.history is not None
        for stored in self.history(self.point, now_ms - 2 * self.window.window_ms, now_ms - 1):
            if input_problem(stored) is None:
                assert stored.value is not None
                self.window.add(stored.ts_ms, stored.value)
                self.last_ms = stored.ts_ms
        self.history = None

    def rate(self, reading: Reading) -> tuple[float | None, str | None]:
        """The rise rate (m/h) at this reading, or why there is none that means anything."""
        if self.history is not None:
            self._seed(reading.ts_ms)  # once: the window as stored before a restart
        problem = input_problem(reading)
        if problem is not None:
            return None, problem
        assert reading.value is not None
        previous, self.last_ms = self.last_ms, max(reading.ts_ms, self.last_ms or 0)
        self.window.add(reading.ts_ms, reading.value)
        if previous is not None and reading.ts_ms - previous > self.max_gap_ms:
            return None, (f"stale_gauge: no reading for {(reading.ts_ms - previous) / 1000:.0f}"
                          " s before this one")
        return self.window.rate(reading.ts_ms)

    def produce(self, reading: Reading, ctx: Context) -> list[Reading]:
        rate, why = self.rate(reading)
        level = reading.value if input_problem(reading) is None else None
        out = []
        for _, name, target in self.targets:
            hours: float | None = None
            reason = why
            if level is not None and level >= target:
                hours, reason = 0.0, None  # there already, whatever the rate
            elif rate is not None and rate < self.min_rate:
                reason = f"{NOT_RISING}: {rate:+.3f} m/h"
            elif rate is not None and level is not None:
                hours = round((target - level) / rate, 6)
            out.append(Reading(self.device, name, reading.ts_ms, hours, "h",
                               "good" if hours is not None else "bad", None, reason))
        return out

    # --- judging -------------------------------------------------------------------------

    def judge(self, reading: Reading, ctx: Context) -> Sequence[Judgement]:
        judge = self.judges.get(reading.key)
        if judge is None:
            return []
        if reading.reason is not None and reading.reason.startswith(NOT_RISING):
            # Never reached at the current rate: as far as the forecast goes, no danger.
            value = math.inf
        elif input_problem(reading) is not None:
            return [Stale(reading.reason or f"{reading.quality}_input", reading.key)]
        else:
            assert reading.value is not None
            value = reading.value
        severity, side, limit = judge.step(reading.ts_ms, value)
        return [Verdict(severity, reading.value, limit, side, point=reading.key, unit="h",
                        quantity="forecast", inclusive=True)]


def build(config: TimeToLevelConfig, env: RuleEnv) -> TimeToLevelRule:
    return TimeToLevelRule(config, env)


RULE_TYPE = RuleType(TimeToLevelConfig, build)
