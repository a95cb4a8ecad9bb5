"""Potential rule: a piezometer's piezometric potential α (位势, the seepage-pressure coefficient).

Seepage monitoring of earth dams reports a piezometer not only as a level but as the
share of the head across the dam that is still acting at the sensor:

    α = (h − h_d) / (h_r − h_d)

with h the piezometric level, h_r the reservoir level and h_d the downstream level (a
tailwater gauge, or a constant: the toe or the downstream ground). α near 1 is the full
reservoir head, near 0 the downstream level. Unlike the level, α hardly moves with the
reservoir while the seepage regime is unchanged, so it is the quantity that is judged
against its design value, and whose slow rise at similar reservoir levels betrays a
clogged drain or a new seepage path (domain reference §2.1, §4: "piezometric level above
the design phreatic line", the phreatic line drawn as potentials).

The rule publishes α as a derived reading ``{device}/alpha`` (dimensionless, the device
defaults to the rule id) at each reading of the piezometer, from the latest reservoir
and downstream levels, and judges it against ``high`` limits (the design value). When
the head difference h_r − h_d is under ``min_head`` (say 1 m: an empty reservoir), α
would divide noise by noise: it is not computed, and the reading is ``bad`` with reason
``small_head``. Inputs propagate as in a derived point (rules.derived): a missing, bad
or dry input makes α bad, a suspect or stale one makes it suspect.

With ``drift``, the rule also publishes ``{device}/alpha_drift``: α now minus the median
of the daily mean α on the days of the past ``window`` (at least ``min_age`` old) whose
mean reservoir level was within ``level_band`` of the current level, and judges it
against ``drift.high``. Days are site-local; the past days are read from the store at
start (on the rules' worker), so a restart forgets nothing.

```yaml
- id: p2-potential
  type: potential
  point: vw-reader-1/piezo_p2
  reservoir: level-1/water_level
  downstream: 98.0                  # or a point (tailwater gauge), or a site level name
  min_head: 1.0
  high: [{severity: warning, value: 0.55}, {severity: alarm, value: 0.62}]
  drift: {window: 365d, level_band: 0.5, high: [{severity: warning, value: 0.05}]}
```
"""

from __future__ import annotations

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
from rules.derived import gather_inputs
from rules.smallstats import median
from rules.threshold import LimitJudge, limit_judge, resolve
from vocab.checking import PathKey, Report
from vocab.configbase import StrictModel
from vocab.durations import Duration
from vocab.ids import Ident, PointRef
from vocab.model import Quality, Reading, Severity

__all__ = ["PotentialConfig", "PotentialRule", "build"]

DAY_MS = 86_400_000


class DriftCheck(StrictModel):
    window: Duration = 365 * 86400.0
    # Days younger than this are not a reference: they are the event being judged.
    min_age: Duration = 7 * 86400.0
    level_band: float = Field(default=0.5, gt=0)
    min_samples: int = Field(default=10, ge=3, le=10_000)
    high: list[Limit] = Field(min_length=1)
    name: Ident = "alpha_drift"

    @field_validator("high")
    @classmethod
    def _one_per_severity(cls, limits: list[Limit], info: ValidationInfo) -> list[Limit]:
        return unique_severities(limits, info.field_name or "")

    @model_validator(mode="after")
    def _room_for_references(self) -> DriftCheck:
        if self.min_age >= self.window:
            raise ValueError("drift.min_age must be shorter than drift.window")
        return self


class PotentialConfig(StrictModel, RuleShape):
    id: Ident
    type: Literal["potential"]
    point: PointRef
    reservoir: PointRef
    # A number (m), a point (a tailwater gauge) or a site level's name.
    downstream: float | PointRef | Ident
    min_head: float = Field(default=1.0, gt=0)
    device: Ident | None = None
    name: Ident = "alpha"
    high: list[Limit] = Field(default_factory=list)
    hysteresis: float = Field(default=0.0, ge=0)
    on_delay: Delay | None = None
    off_delay: Delay | None = None
    drift: DriftCheck | None = None
    # Age beyond which the reservoir or downstream level makes α suspect; default three
    # poll intervals of that point.
    stale_after: Duration | None = None

    @field_validator("high")
    @classmethod
    def _one_per_severity(cls, limits: list[Limit], info: ValidationInfo) -> list[Limit]:
        return unique_severities(limits, info.field_name or "")

    @model_validator(mode="after")
    def _distinct(self) -> PotentialConfig:
        if self.drift is not None and self.drift.name == self.name:
            raise ValueError(f"name and drift.name are both {self.name!r}: give them "
                             "distinct names")
        return self

    @property
    def virtual_device(self) -> str:
        return self.device or self.id

    @property
    def downstream_point(self) -> str | None:
        return self.downstream if isinstance(self.downstream, str) and "/" in self.downstream \
            else None

    def read_points(self) -> list[tuple[PathKey, str]]:
        points: list[tuple[PathKey, str]] = [(("point",), self.point),
                                             (("reservoir",), self.reservoir)]
        if self.downstream_point is not None:
            points.append((("downstream",), self.downstream_point))
        return points

    def level_refs(self) -> Iterator[tuple[PathKey, str]]:
        if isinstance(self.downstream, str) and self.downstream_point is None:
            yield ("downstream",), self.downstream

    def limits(self) -> Iterator[tuple[PathKey, Limit]]:
        for index, limit in enumerate(self.high):
            yield ("high", index), limit
        for index, limit in enumerate(self.drift.high if self.drift else []):
            yield ("drift", "high", index), limit

    def history_needs(self) -> Iterator[tuple[PathKey, float]]:
        if self.drift is not None:
            yield ("drift", "window"), self.drift.window

    def outputs(self) -> list[str]:
        names = [self.name] + ([self.drift.name] if self.drift else [])
        return [f"{self.virtual_device}/{name}" for name in names]

    def check(self, site: SiteView, report: Report) -> None:
        # α is a ratio of level differences: the three levels must share their unit.
        for path, key in self.read_points():
            unit = site.units.get(key)
            if key in site.known and unit != "m":
                report(path, f"rule {self.id!r}: point {key!r} is in {unit!r}; the "
                             "piezometric potential needs levels in m")


class PotentialRule:
    """Producer of α (and its drift) at each piezometer reading, and judge of their limits."""

    def __init__(self, config: PotentialConfig, env: RuleEnv) -> None:
        self.id = config.id
        self.point = config.point
        self.source = config.point
        self.reservoir = config.reservoir
        self.device = config.virtual_device
        self.name = config.name
        self.alpha_key = f"{self.device}/{config.name}"
        self.downstream_point = config.downstream_point
        self.downstream_level = (None if self.downstream_point is not None
                                 else resolve(env.levels, config.downstream))
        self.refs = tuple(key for _, key in config.read_points())
        self.stale_after_ms = {
            key: int(config.stale_after * 1000) if config.stale_after else env.stale_after_ms(key)
            for key in self.refs}
        self.stale_after_ms[self.point] = 0  # α is stamped with the piezometer's reading
        self.min_head = config.min_head
        self.outputs = tuple(config.outputs())
        self.inputs = self.outputs
        self.judges: dict[str, tuple[LimitJudge, str]] = {}
        if config.high:
            self.judges[self.alpha_key] = (limit_judge(config.high, [], config.hysteresis, env,
                                                       config.on_delay, config.off_delay),
                                           "potential")
        self.drift = config.drift
        self.bins: SeededBins | None = None
        if config.drift is not None:
            self.drift_key = f"{self.device}/{config.drift.name}"
            self.judges[self.drift_key] = (limit_judge(config.drift.high, [], config.hysteresis,
                                                       env, config.on_delay, config.off_delay),
                                           "drift")
            self.bins = SeededBins((self.alpha_key, self.reservoir), DAY_MS, env.offset_ms,
                                   int(config.drift.window * 1000) + DAY_MS, env.history,
                                   env.worker, config.id)
        self.alarm_points = tuple(self.judges)

    def restore_alarm(self, point: str, severity: Severity, side: str) -> None:
        if point in self.judges:
            self.judges[point][0].restore(severity, side)

    # --- producing α ---------------------------------------------------------------------

    def alpha(self, ctx: Context, ts_ms: int) -> tuple[float | None, Quality, str | None,
                                                       float | None]:
        """α at ``ts_ms`` from the latest levels: (α, quality, reason, reservoir level)."""
        values, bad, doubtful = gather_inputs(ctx, self.refs, ts_ms, self.stale_after_ms)
        if bad:
            return None, "bad", "; ".join(bad), None
        level = values[self.reservoir]
        downstream = (values[self.downstream_point] if self.downstream_point is not None
                      else self.downstream_level)
        assert downstream is not None
        head = level - downstream
        if head < self.min_head:
            return None, "bad", (f"small_head: reservoir − downstream = {head:.2f} m, under "
                                 f"min_head {self.min_head:g} m"), level
        alpha = round((values[self.point] - downstream) / head, 6)
        return alpha, "suspect" if doubtful else "good", "; ".join(doubtful) or None, level

    def produce(self, reading: Reading, ctx: Context) -> list[Reading]:
        ts = reading.ts_ms
        alpha, quality, reason, level = self.alpha(ctx, ts)
        published = Reading(self.device, self.name, ts, alpha, "", quality, None, reason)
        out = [published]
        if self.drift is not None:
            out.append(self._drift(published, level))
        return out

    # --- its drift at similar reservoir levels ---------------------------------------------

    def _drift(self, alpha: Reading, level: float | None) -> Reading:
        assert self.drift is not None and self.bins is not None
        ts = alpha.ts_ms
        self.bins.start(ts)
        if alpha.quality == "good" and level is not None:
            self.bins.add(alpha)
            # The reservoir's day is binned from the levels α was computed with.
            device, point = self.reservoir.split("/", 1)
            self.bins.add(Reading(device, point, ts, level, "m", "good"))
        self.bins.prune(ts)
        value: float | None = None
        if self.bins.loading:
            why: str | None = "loading: reading the stored history"
        elif alpha.quality != "good" or alpha.value is None or level is None:
            why = f"no_alpha: {alpha.reason or alpha.quality}"
        else:
            reference, why = self.reference(ts, level)
            if reference is not None:
                value = round(alpha.value - reference, 6)
        device, name = self.drift_key.split("/", 1)
        return Reading(device, name, ts, value, "", "good" if why is None else "bad", None, why)

    def reference(self, ts_ms: int, level: float) -> tuple[float | None, str | None]:
        """The median daily α at reservoir levels near ``level`` in the window, or why not."""
        assert self.drift is not None and self.bins is not None
        newest = self.bins.bin(ts_ms - int(self.drift.min_age * 1000))
        oldest = self.bins.bin(ts_ms - int(self.drift.window * 1000))
        similar: list[float] = []
        for day in range(oldest, newest + 1):
            day_alpha = self.bins.mean(self.alpha_key, day)
            day_level = self.bins.mean(self.reservoir, day)
            if day_alpha is not None and day_level is not None \
                    and abs(day_level - level) <= self.drift.level_band:
                similar.append(day_alpha)
        if len(similar) < self.drift.min_samples:
            return None, (f"insufficient_history: {len(similar)} days at reservoir level "
                          f"{level:.2f} ± {self.drift.level_band:g} m, need "
                          f"{self.drift.min_samples}")
        return median(similar), None

    # --- judging -------------------------------------------------------------------------

    def judge(self, reading: Reading, ctx: Context) -> Sequence[Judgement]:
        entry = self.judges.get(reading.key)
        if entry is None:
            return []
        judge, quantity = entry
        if input_problem(reading) is not None:
            # Small head, bad input, history still loading: the alarm is held.
            return [Stale(reading.reason or f"{reading.quality}_input", reading.key)]
        assert reading.value is not None
        severity, side, limit = judge.step(reading.ts_ms, reading.value)
        return [Verdict(severity, reading.value, limit, side, point=reading.key, unit="",
                        quantity=quantity)]


def build(config: PotentialConfig, env: RuleEnv) -> PotentialRule:
    return PotentialRule(config, env)


RULE_TYPE = RuleType(PotentialConfig, build)
