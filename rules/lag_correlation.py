"""Lag-correlation rule: does the piezometer still follow the reservoir at the site's lag?

Models the seepage-lag check of the domain reference §3.2: a piezometer follows the
reservoir level with a site-specific lag (days to weeks). Pearson r between the
piezometer's means and the level's means ``lag`` earlier, over a rolling ``window``, is
high while the seepage regime is unchanged; a sustained drop is an analysis alarm: a
clogged tip, a new leak path or a sensor fault. A piezometer rising without the reservoir
rising (the classic seepage-failure precursor) shows up as exactly such a drop.

Both series are averaged into ``sample`` bins (daily by default, aligned to site-local
midnight) and r is recomputed when a piezometer bin completes. Bins missing from either
series are left out of the pairs; with fewer than ``min_coverage`` of the window's pairs,
or with a series constant over the window (a full reservoir at the spillway crest: r is
then undefined, not low), the rule holds its state and says why. With a history
provider the bins are rebuilt from the store at start, on the rules' worker
(rules.bins.SeededBins), page by page: never on the event loop.

```yaml
- id: piezo-1-lag
  type: lag_correlation
  point: piezo-1/head
  level: level-1/water_level
  lag: 10d
  window: 60d
  low: [{severity: warning, value: 0.5}]     # r below 0.5: a site choice (§3.2)
```
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

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
from rules.bins import SeededBins
from rules.configtypes import Delay, Limit, unique_severities
from rules.smallstats import pearson_r
from rules.threshold import LimitJudge, limit_judge
from vocab.checking import PathKey
from vocab.configbase import StrictModel
from vocab.durations import Duration
from vocab.ids import Ident, PointRef
from vocab.model import Reading, Severity

__all__ = ["LagCorrelationConfig", "LagCorrelationRule", "build"]


class LagCorrelationConfig(StrictModel, RuleShape):
    id: Ident
    type: Literal["lag_correlation"]
    point: PointRef
    level: PointRef
    lag: Duration
    window: Duration = 60 * 86400.0
    sample: Duration = 86400.0
    low: list[Limit] = Field(min_length=1)
    hysteresis: float = Field(default=0.05, ge=0)
    min_coverage: float = Field(default=0.8, gt=0, le=1)
    on_delay: Delay | None = None
    off_delay: Delay | None = None

    @field_validator("low")
    @classmethod
    def _one_per_severity(cls, limits: list[Limit], info: ValidationInfo) -> list[Limit]:
        return unique_severities(limits, info.field_name or "")

    @model_validator(mode="after")
    def _whole_bins(self) -> LagCorrelationConfig:
        for name in ("lag", "window"):
            bins = getattr(self, name) / self.sample
            if bins != int(bins):
                raise ValueError(f"{name} must be a whole number of samples ({self.sample:g} s)")
        if self.window / self.sample < 3:
            raise ValueError("window must hold at least 3 samples")
        return self

    def read_points(self) -> list[tuple[PathKey, str]]:
        return [(("point",), self.point), (("level",), self.level)]

    def history_needs(self) -> Iterator[tuple[PathKey, float]]:
        yield ("window",), self.window + self.lag


class LagCorrelationRule:
    def __init__(self, config: LagCorrelationConfig, env: RuleEnv) -> None:
        self.id = config.id
        self.point = config.point
        self.level = config.level
        self.inputs = (config.point, config.level)
        self.alarm_points = (config.point,)
        self.bin_ms = int(config.sample * 1000)
        self.lag_bins = int(config.lag / config.sample)
        self.window_bins = int(config.window / config.sample)
        self.min_pairs = max(3, math.ceil(config.min_coverage * self.window_bins))
        # Bins start at local midnight (rules.base.standard_offset_ms).
        self.offset_ms = env.offset_ms
        self.limits: LimitJudge = limit_judge([], config.low, config.hysteresis, env,
                                              config.on_delay, config.off_delay)
        # The stored bins are read at the first reading, on the rules' worker.
        self.bins = SeededBins((config.point, config.level), self.bin_ms, self.offset_ms,
                               (self.window_bins + self.lag_bins + 1) * self.bin_ms,
                               env.history, env.worker, config.id)
        self.last_judged_bin: int | None = None

    def restore_alarm(self, point: str, severity: Severity, side: str) -> None:
        self.limits.restore(severity, side)

    def correlation(self, current_bin: int) -> tuple[float | None, str | None]:
        """r at the site lag over the completed bins of the window, or why not."""
        piezo, level = self.bins.sums[self.point], self.bins.sums[self.level]
        pairs = [(level[b - self.lag_bins], piezo[b])
                 for b in range(current_bin - self.window_bins, current_bin)
                 if b in piezo and b - self.lag_bins in level]
        if len(pairs) < self.min_pairs:
            return None, (f"insufficient_history: {len(pairs)} of {self.window_bins} "
                          f"samples, need {self.min_pairs}")
        xs = [total / count for total, count in (p[0] for p in pairs)]
        ys = [total / count for total, count in (p[1] for p in pairs)]
        # r at lag 0 of the already-lagged pairs: tens of values once a bin, pure Python,
        # so a site with this rule does not load numpy (rules.smallstats).
        r = pearson_r(xs, ys)
        if math.isnan(r):
            return None, "undefined: level or piezometer constant over the window"
        return r, None

    def judge(self, reading: Reading, ctx: Context) -> Sequence[Judgement]:
        self.bins.start(reading.ts_ms)
        self.bins.add(reading)
        if reading.key != self.point:
            return []
        problem = input_problem(reading)
        if problem is not None:
            return [Stale(problem)]
        if self.bins.loading:
            return [Stale("loading: reading the stored history")]
        current = self.bins.bin(reading.ts_ms)
        if self.last_judged_bin is not None and current <= self.last_judged_bin:
            return []  # r only changes when a bin completes
        self.last_judged_bin = current
        self.bins.prune(reading.ts_ms)
        r, why = self.correlation(current)
        if r is None:
            return [Stale(why or "insufficient_history")]
        severity, side, limit = self.limits.step(reading.ts_ms, r)
        return [Verdict(severity, round(r, 4), limit, side, unit="", quantity="correlation")]


def build(config: LagCorrelationConfig, env: RuleEnv) -> LagCorrelationRule:
    return LagCorrelationRule(config, env)


RULE_TYPE = RuleType(LagCorrelationConfig, build)
