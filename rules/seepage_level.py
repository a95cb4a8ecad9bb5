"""Seepage-versus-level rule: is the piezometer above what this reservoir level gave before?

Practice alarms on a piezometric level "above the historical maximum at the same
reservoir level" (domain reference §4): the same pool should give the same seepage, so
a piezometer standing higher than it ever did at that level betrays a new seepage path,
a clogged drain or a rising phreatic line, before any fixed limit is reached. This rule
makes that check statistical. From the station's own history it fits

    h(b) = a + c·L(b − lag)

by least squares, h the piezometer's and L the reservoir's ``sample`` means (daily,
site-local), ``lag`` the seepage lag the piezometer follows the reservoir with (§3.2):
given here, or taken from a ``lag_correlation`` rule with ``lag_rule``. Each reading h
of the piezometer is compared with the level expected from the reservoir's mean ``lag``
earlier, ĥ, in standard errors of prediction:

    z = (h − ĥ) / SE,   SE = s·√(1 + 1/n + (L − L̄)²/Sxx)

(s the residual standard deviation over n pairs): the textbook prediction interval,
which widens at reservoir levels the history has rarely seen. ``high`` limits on z
(warning at 2, alarm at 3, say) raise when the piezometer is that far above; a
piezometer below its expectation raises nothing here.

The rule publishes ``{device}/expected`` (ĥ, m) and ``{device}/excess`` (z) as derived
readings; the device defaults to the rule id. The line is refitted when a bin completes,
on the last ``history`` of bins, in pure Python (a few hundred pairs); readings found
above the lowest limit are left out of the bins, so an anomaly does not teach the model
that it is normal. The stored history is read at start on the rules' worker. Until
``min_samples`` pairs are there, or while the reservoir level of ``lag`` ago is
unknown, the readings are ``bad`` with the reason and the alarm is held.

```yaml
- id: p1-seepage-level
  type: seepage_level
  point: vw-reader-1/piezo_p1
  level: level-1/water_level
  lag_rule: piezo-p1-lag            # or lag: 10d
  history: 365d
  high: [{severity: warning, value: 2.0}, {severity: alarm, value: 3.0}]
```
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from rules.base import (
    Context,
    Judgement,
    RuleEnv,
    RuleShape,
    RuleType,
    SiteView,
    Stale,
    Verdict,
    input_problem,
)
from rules.bins import SeededBins
from rules.configtypes import Delay, Limit, unique_severities
from rules.smallstats import LineFit, line_fit
from rules.threshold import limit_judge
from vocab.checking import PathKey, Report
from vocab.configbase import StrictModel
from vocab.durations import Duration, format_duration
from vocab.ids import Ident, PointRef
from vocab.model import Quality, Reading, Severity

__all__ = ["SeepageLevelConfig", "SeepageLevelRule", "build"]


class SeepageLevelConfig(StrictModel, RuleShape):
    id: Ident
    type: Literal["seepage_level"]
    point: PointRef
    level: PointRef
    lag: Duration | None = None
    # A lag_correlation rule whose lag this piezometer follows the reservoir with.
    lag_rule: Ident | None = None
    sample: Duration = 86400.0
    history: Duration = 365 * 86400.0
    min_samples: int = Field(default=30, ge=5, le=100_000)
    high: list[Limit] = Field(min_length=1)
    hysteresis: float = Field(default=0.2, ge=0)
    on_delay: Delay | None = None
    off_delay: Delay | None = None
    device: Ident | None = None

    @field_validator("high")
    @classmethod
    def _one_per_severity(cls, limits: list[Limit], info: ValidationInfo) -> list[Limit]:
        for limit in limits:
            if isinstance(limit.value, str):
                raise ValueError(f"limit {limit.value!r}: the limits are numbers of standard "
                                 "errors (2, 3), not site levels")
        return unique_severities(limits, info.field_name or "")

    @model_validator(mode="after")
    def _one_lag(self) -> SeepageLevelConfig:
        if (self.lag is None) == (self.lag_rule is None):
            raise ValueError("give the seepage lag as 'lag' (a duration) or 'lag_rule' (the id "
                             "of a lag_correlation rule), exactly one")
        if self.lag is not None:
            whole_samples(self.lag, self.sample)
        if self.history / self.sample < self.min_samples:
            raise ValueError(f"history holds {self.history / self.sample:g} samples, fewer "
                             f"than min_samples ({self.min_samples})")
        return self

    @property
    def virtual_device(self) -> str:
        return self.device or self.id

    def read_points(self) -> list[tuple[PathKey, str]]:
        return [(("point",), self.point), (("level",), self.level)]

    def history_needs(self) -> Iterator[tuple[PathKey, float]]:
        yield ("history",), self.history + (self.lag or 0.0)

    def outputs(self) -> list[str]:
        return [f"{self.virtual_device}/expected", f"{self.virtual_device}/excess"]

    def output_units(self) -> dict[str, str]:
        expected, excess = self.outputs()
        return {expected: "m", excess: ""}

    def check(self, site: SiteView, report: Report) -> None:
        for path, key in self.read_points():
            unit = site.units.get(key)
            if key in site.known and unit != "m":
                report(path, f"rule {self.id!r}: point {key!r} is in {unit!r}; seepage "
                             "versus level needs levels in m")
        if self.lag_rule is None:
            return
        other = site.rules.get(self.lag_rule)
        if other is None or getattr(other, "type", None) != "lag_correlation":
            report(("lag_rule",), f"rule {self.id!r}: lag_rule {self.lag_rule!r} is not a "
                                  "lag_correlation rule of this site")
            return
        try:
            whole_samples(other.lag, self.sample)
        except ValueError as exc:
            report(("lag_rule",), f"rule {self.id!r}: the lag of {self.lag_rule!r}: {exc}")
        if self.history + other.lag > site.retention_s:
            report(("history",), f"rule {self.id!r} needs "
                                 f"{format_duration(self.history + other.lag)} of history "
                                 "(history + the lag), longer than the store keeps")


def whole_samples(lag_s: float, sample_s: float) -> int:
    samples = lag_s / sample_s
    if samples != int(samples):
        raise ValueError(f"lag {format_duration(lag_s)} is not a whole number of samples "
                         f"({format_duration(sample_s)})")
    return int(samples)


class SeepageLevelRule:
    """Producer of the expected level and the excess at each piezometer reading, and
    judge of the excess."""

    def __init__(self, config: SeepageLevelConfig, env: RuleEnv) -> None:
        self.id = config.id
        self.point = config.point
        self.source = config.point
        self.level = config.level
        self.device = config.virtual_device
        self.expected_key, self.excess_key = config.outputs()
        self.outputs = (self.expected_key, self.excess_key)
        self.inputs = (self.excess_key,)
        self.alarm_points = (self.excess_key,)
        lag_s = config.lag if config.lag is not None else env.rules[config.lag_rule].lag
        bin_ms = int(config.sample * 1000)
        self.lag_bins = whole_samples(lag_s, config.sample)
        self.history_bins = int(config.history // config.sample)
        self.min_samples = config.min_samples
        self.bins = SeededBins((config.point, config.level), bin_ms, env.offset_ms,
                               (self.history_bins + self.lag_bins + 1) * bin_ms, env.history,
                               env.worker, config.id)
        self.level_max_age_ms = env.stale_after_ms(config.level)
        self.judge_ = limit_judge(config.high, [], config.hysteresis, env, config.on_delay,
                                  config.off_delay)
        # Readings at or beyond the lowest limit stay out of the history.
        self.exceeds = min(float(limit.value) for limit in config.high)
        self.fit: LineFit | None = None
        self.fitted_bin: int | None = None
        self._why_not = "insufficient_history"

    def restore_alarm(self, point: str, severity: Severity, side: str) -> None:
        self.judge_.restore(severity, side)

    # --- the line --------------------------------------------------------------------------

    def refit(self, current: int) -> str | None:
        """Fit on the completed bins before ``current``; None, or why there is no line."""
        if self.fitted_bin == current:
            return None if self.fit is not None else self._why_not
        self.fitted_bin = current
        xs: list[float] = []
        ys: list[float] = []
        for b in range(current - self.history_bins, current):
            h = self.bins.mean(self.point, b)
            level = self.bins.mean(self.level, b - self.lag_bins)
            if h is not None and level is not None:
                xs.append(level)
                ys.append(h)
        self.fit = None
        if len(xs) < self.min_samples:
            self._why_not = (f"insufficient_history: {len(xs)} samples, need "
                             f"{self.min_samples}")
        else:
            self.fit = line_fit(xs, ys)
            self._why_not = "undefined: the reservoir level never varied over the history"
        return None if self.fit is not None else self._why_not

    # --- producing the readings ------------------------------------------------------------

    def produce(self, reading: Reading, ctx: Context) -> list[Reading]:
        ts = reading.ts_ms
        self.bins.start(ts)
        level_now, _ = ctx.current(self.level, self.level_max_age_ms)
        if level_now is not None:
            # The reservoir's bins are fed at the piezometer's readings: means of a day.
            device, point = self.level.split("/", 1)
            self.bins.add(Reading(device, point, ts, level_now, "m", "good"))
        self.bins.prune(ts)
        expected, z, why = self.compare(reading)
        problem = input_problem(reading)
        if problem is None and (z is None or z < self.exceeds):
            self.bins.add(reading)
        excess_why = why or problem
        return [self._reading("expected", ts, expected, why, "m"),
                self._reading("excess", ts, None if excess_why else z, excess_why, "")]

    def compare(self, reading: Reading) -> tuple[float | None, float | None, str | None]:
        """(ĥ, z, why not) for one piezometer reading."""
        if self.bins.loading:
            return None, None, "loading: reading the stored history"
        current = self.bins.bin(reading.ts_ms)
        why = self.refit(current)
        if why is not None:
            return None, None, why
        assert self.fit is not None
        lagged = current - self.lag_bins
        level = self.bins.mean(self.level, lagged)
        if level is None:
            day = dt.datetime.fromtimestamp(
                (lagged * self.bins.bin_ms - self.bins.offset_ms) / 1000, dt.UTC).date()
            return None, None, f"no_level: no reservoir level in the sample of {day}"
        expected = self.fit.predict(level)
        se = self.fit.prediction_se(level)
        if se == 0.0:
            return round(expected, 4), None, "undefined: the history lies exactly on a line"
        if reading.value is None:
            return round(expected, 4), None, None
        return round(expected, 4), round((reading.value - expected) / se, 4), None

    def _reading(self, name: str, ts_ms: int, value: float | None, why: str | None,
                 unit: str) -> Reading:
        quality: Quality = "good" if value is not None else "bad"
        return Reading(self.device, name, ts_ms, value, unit, quality, None,
                       why if value is None else None)

    # --- judging -------------------------------------------------------------------------

    def judge(self, reading: Reading, ctx: Context) -> Sequence[Judgement]:
        if reading.key != self.excess_key:
            return []
        if input_problem(reading) is not None:
            return [Stale(reading.reason or f"{reading.quality}_input", reading.key)]
        assert reading.value is not None
        severity, side, limit = self.judge_.step(reading.ts_ms, reading.value)
        return [Verdict(severity, reading.value, limit, side, point=reading.key, unit="",
                        quantity="excess")]


def build(config: SeepageLevelConfig, env: RuleEnv) -> SeepageLevelRule:
    return SeepageLevelRule(config, env)


RULE_TYPE = RuleType(SeepageLevelConfig, build)
