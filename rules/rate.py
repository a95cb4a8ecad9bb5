"""Rate rule: change per unit of time over a window, against multi-level limits.

Models the rise-rate and movement-rate practice of the domain reference (§2.4, §2.5, §4):
a reservoir rising fast (m/h) during a flood, a rapid drawdown (a falling rate limit:
upstream slopes slide when the pool drops faster than the dam drains), a seepage flow
rising abruptly (渗流突变), displacement or settlement rates in mm/day.

The rule must say how the rate is taken, because the two common ways differ:

* ``endpoint``: (L(t) − L(t − W)) / span, with L(t − W) the latest reading at or before
  t − W, so the span is at least the window;
* ``least_squares``: the slope of the least-squares line through the readings in the
  window, which averages out quantisation noise (at 0.01 m resolution a rate over less
  than about 30 min is mostly noise).

Both take the window closed, [t − W, t]: a reading stamped exactly at t − W is in it,
as the endpoint method and most practice take it. A level reading is a sample of the
level at its stamp, so the one at t − W belongs to the window's start. (Rainfall sums
differ on purpose: an increment is stamped at the end of its counting interval, so the
one stamped at t − W fell before the window, hence their (t − W, t].)

``per`` names the rate unit: ``m/h``, ``mm/day``, ``cm/h``, or ``<point unit>/<time>``
(``L/s/h`` for a seepage flow in L/s); lengths are converted (a point in m with
``per: mm/day`` gives mm/day).

```yaml
- id: level-rise
  type: rate
  point: level-1/water_level
  method: least_squares
  window: 1h
  per: m/h
  high: [{severity: warning, value: 0.3}, {severity: alarm, value: 0.5}]
  low: [{severity: warning, value: -0.5}]     # rapid drawdown
  hysteresis: 0.02
  on_delay: {samples: 2}
```
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from typing import Literal

from pydantic import Field

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
from rules.configtypes import LimitsConfig
from rules.threshold import LimitJudge, limit_judge
from vocab.checking import PathKey, Report
from vocab.durations import Duration
from vocab.ids import Ident, PointRef
from vocab.model import Reading, Severity

__all__ = ["RateConfig", "RateRule", "RateWindow", "build", "least_squares_slope", "rate_factor"]

LENGTH_M = {"m": 1.0, "cm": 0.01, "mm": 0.001}
TIME_S = {"s": 1.0, "min": 60.0, "h": 3600.0, "hour": 3600.0, "d": 86400.0, "day": 86400.0}


def rate_factor(per: str, point_unit: str) -> float:
    """Multiplier from (point unit)/s to the ``per`` unit; ValueError if they do not fit."""
    if "/" not in per:
        raise ValueError(f"rate unit {per!r} must be <unit>/<time>, e.g. m/h or mm/day")
    # The last '/' divides by time, so a flow in L/s has rates in L/s/h.
    value_unit, time_unit = (part.strip() for part in per.rsplit("/", 1))
    if time_unit not in TIME_S:
        raise ValueError(f"rate unit {per!r}: time must be one of {', '.join(TIME_S)}")
    if value_unit == point_unit:
        scale = 1.0
    elif value_unit in LENGTH_M and point_unit in LENGTH_M:
        scale = LENGTH_M[point_unit] / LENGTH_M[value_unit]
    else:
        raise ValueError(f"rate unit {per!r} does not fit the point's unit {point_unit!r}")
    return scale * TIME_S[time_unit]


class RateConfig(LimitsConfig, RuleShape):
    id: Ident
    type: Literal["rate"]
    point: PointRef
    method: Literal["endpoint", "least_squares"]
    window: Duration
    per: str = "m/h"
    # Least squares needs this many readings in the window (and half the window covered).
    min_samples: int = Field(default=3, ge=2)

    def history_needs(self) -> Iterator[tuple[PathKey, float]]:
        yield ("window",), self.window

    def check(self, site: SiteView, report: Report) -> None:
        if self.point in site.known:
            try:
                rate_factor(self.per, site.units.get(self.point, ""))
            except ValueError as exc:
                report(("per",), f"rule {self.id!r}: {exc}")


def least_squares_slope(ts_ms: Sequence[int], values: Sequence[float]) -> float:
    """Slope in value per second; times are shifted to the first one to keep precision."""
    n = len(ts_ms)
    origin = ts_ms[0]
    t = [(x - origin) / 1000.0 for x in ts_ms]
    mean_t = sum(t) / n
    mean_v = sum(values) / n
    sxx = sum((x - mean_t) ** 2 for x in t)
    sxy = sum((x - mean_t) * (v - mean_v) for x, v in zip(t, values, strict=True))
    return sxy / sxx


class RateWindow:
    """The readings of one point over a rate window, and the rate through them.

    Both methods use the closed window [t − W, t] (see the module's docstring): the
    endpoint's reference is the latest reading at or before t − W, and the least-squares
    line runs through every reading stamped from t − W to t, ends included.
    """

    def __init__(self, method: str, window_s: float, factor: float, min_samples: int) -> None:
        self.method = method
        self.window_ms = int(window_s * 1000)
        self.factor = factor
        self.min_samples = min_samples
        # Good readings, oldest first; endpoint needs one reading at or before t − W.
        self.samples: deque[tuple[int, float]] = deque()

    def add(self, ts_ms: int, value: float) -> None:
        if self.samples and ts_ms <= self.samples[-1][0]:
            return  # a repeated or older stamp would make the slope meaningless
        self.samples.append((ts_ms, value))
        # Keep the newest reading at or before t − W (the endpoint's reference) and drop
        # everything older than it.
        cutoff = ts_ms - self.window_ms
        while len(self.samples) > 1 and self.samples[1][0] <= cutoff:
            self.samples.popleft()

    def rate(self, now_ms: int) -> tuple[float | None, str | None]:
        """The rate in the rule's unit at ``now_ms`` (the newest sample), or why not."""
        if not self.samples:
            return None, "insufficient_history: no reading"
        start = now_ms - self.window_ms
        if self.method == "endpoint":
            reference = self.samples[0]
            if reference[0] > start:
                return None, "insufficient_history: no reading a full window back"
            if reference[0] < start - self.window_ms // 2:
                return None, "insufficient_history: gap at the start of the window"
            ts, value = self.samples[-1]
            return (value - reference[1]) / ((ts - reference[0]) / 1000.0) * self.factor, None
        inside = [(t, v) for t, v in self.samples if t >= start]
        if len(inside) < self.min_samples:
            return None, f"insufficient_history: {len(inside)} readings in the window"
        if inside[-1][0] - inside[0][0] < self.window_ms / 2:
            return None, "insufficient_history: readings cover less than half the window"
        slope = least_squares_slope([t for t, _ in inside], [v for _, v in inside])
        return slope * self.factor, None


class RateRule:
    def __init__(self, rule_id: str, point: str, method: str, window_s: float, factor: float,
                 unit: str, limits: LimitJudge, min_samples: int = 3,
                 history: HistoryProvider | None = None) -> None:
        self.id = rule_id
        self.point = point
        self.inputs = (point,)
        self.alarm_points = (point,)
        self.window = RateWindow(method, window_s, factor, min_samples)
        self.unit = unit
        self.limits = limits
        self.history = history

    def restore_alarm(self, point: str, severity: Severity, side: str) -> None:
        self.limits.restore(severity, side)

    def seed(self, stored: Sequence[Reading]) -> None:
        """Fill the window from stored readings, so a restart does not blind the rule."""
        for reading in stored:
            if input_problem(reading) is None:
                assert reading.value is not None
                self.window.add(reading.ts_ms, reading.value)

    def rate(self, now_ms: int) -> tuple[float | None, str | None]:
        return self.window.rate(now_ms)

    def judge(self, reading: Reading, ctx: Context) -> Sequence[Judgement]:
        problem = input_problem(reading)
        if problem is not None:
            return [Stale(problem)]
        assert reading.value is not None
        if self.history is not None:
            # Once, at the first reading: the window as stored before this start.
            self.seed(self.history(self.point, reading.ts_ms - 2 * self.window.window_ms,
                                   reading.ts_ms - 1))
            self.history = None
        self.window.add(reading.ts_ms, reading.value)
        value, why = self.rate(reading.ts_ms)
        if value is None:
            return [Stale(why or "insufficient_history")]
        severity, side, limit = self.limits.step(reading.ts_ms, value)
        return [Verdict(severity, value, limit, side, unit=self.unit, quantity="rate")]


def build(config: RateConfig, env: RuleEnv) -> RateRule:
    factor = rate_factor(config.per, env.units.get(config.point, ""))
    limits = limit_judge(config.high, config.low, config.hysteresis, env, config.on_delay,
                         config.off_delay)
    return RateRule(config.id, config.point, config.method, config.window, factor,
                    config.per, limits, config.min_samples, env.history)


RULE_TYPE = RuleType(RateConfig, build)
