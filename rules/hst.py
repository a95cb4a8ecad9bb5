"""HST rule: a seepage or displacement reading against its hydrostatic–season–time model.

Models the statistical-model monitoring of the domain reference §3.1 and §4: the reading
y is compared with the HST prediction ŷ from the reservoir head H = level − reference and
the date; a residual |y − ŷ| beyond 2S is a warning and beyond 3S an alarm, the
confidence-interval method (置信区间法), S being the model's residual standard deviation,
and only after ``consecutive`` exceedances in a row (≥ 3 cuts false alarms yet catches
sudden damage). The residual's sign is the side: 'above' (more seepage, more
displacement than the model expects) or 'below'.

The model comes from configuration (coefficients of an offline analysis, in the order of
``rules.statistics.hst_term_names``, with t in days since ``base_date`` at 00:00 site
time and H centred on ``head_centre``), or is fitted from stored history through the
engine's history provider, with readings binned (``bin``, aligned to site-local
midnight) into means of both series. A fitted model needs its own ``base_date`` too
(the first impoundment or the start of monitoring): time effects θ = t/100 and
ln(1 + θ) count from that fixed date, so a creep coefficient means the same thing at
every refit; bins before it are left out, and a reading before it is not judged.
It is refitted every ``refit_every`` on the history without the readings this rule
flagged (and without those screening marked suspect, which the store keeps as such); the
refit replaces the model in use unless, fitted without the last ``holdout``, it predicts
that holdout more than 5 % worse (RMS) than the model in use does.

```yaml
- id: seepage-hst
  type: hst
  point: weir-1/seepage_flow
  level: level-1/water_level
  head_reference: dead          # H = level - reference, a site level or a number (m)
  consecutive: 3
  fit: {base_date: 2019-06-01, history: 730d, refit_every: 30d, bin: 1h,
        min_samples: 500, holdout: 30d}
  # or, from an offline analysis:
  # model: {base_date: 2023-01-01, head_centre: 15.2, s: 0.012,
  #         coefficients: {a0: 1.1, a1: 0.02, a2: 0.001, a3: 0.0, b11: 0.03, b21: -0.01,
  #                        b12: 0.0, b22: 0.0, c1: 0.004, c2: 0.01}}
```
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal
from zoneinfo import ZoneInfo

import structlog
from pydantic import Field, model_validator

from rules.base import (
    Context,
    HistoryProvider,
    Judgement,
    RuleEnv,
    RuleShape,
    RuleType,
    Stale,
    Verdict,
    input_problem,
)
from rules.bins import BinSums, add_to_bins, history_bin_means, means
from rules.limits import Debounce, DelaySpec
from rules.smallstats import HstFit, hst_residual_verdict, hst_term_names
from rules.threshold import resolve
from vocab.checking import PathKey
from vocab.configbase import StrictModel
from vocab.durations import Duration
from vocab.ids import Ident, PointRef
from vocab.model import Reading, Severity

if TYPE_CHECKING:
    import numpy as np

# numpy (through rules.statistics) costs the daemon about 12 MiB of RSS and is needed
# only for the least-squares fit, so it is imported inside the fitting functions: a model
# configured from coefficients judges readings in pure Python (rules.smallstats), and a
# rule that fits from history loads numpy when it is built, at start, not at a refit
# hours or weeks later.

__all__ = ["FitPlan", "HstConfig", "HstRule", "build", "fit_from_bins", "fit_from_history",
           "history_bin_means"]

log = structlog.get_logger("rules.hst")

DAY_MS = 86_400_000
# Readings flagged by the rule and kept out of refits; a bound, not a policy: at one
# reading an hour this is over eleven years of exceedances.
_FLAGGED_KEPT = 100_000
# A refit predicting the held-out days this much worse (RMS) than the model in use is
# rejected; equal models differ by noise, so a strict comparison would freeze the first.
_WORSE_BY = 1.05


class HstModel(StrictModel):
    base_date: dt.date
    head_centre: float = 0.0
    s: float = Field(gt=0)
    coefficients: dict[str, float]


class HstFitConfig(StrictModel):
    # Origin of the time effects: the first impoundment or the start of monitoring.
    base_date: dt.date
    history: Duration = 730 * 86400.0
    refit_every: Duration = 30 * 86400.0
    bin: Duration = 3600.0
    min_samples: int = Field(default=200, ge=20)
    holdout: Duration = 30 * 86400.0


class HstConfig(StrictModel, RuleShape):
    id: Ident
    type: Literal["hst"]
    point: PointRef
    level: PointRef
    head_reference: float | Ident = 0.0
    degree: Literal[3, 4] = 3
    seasonal: bool = True
    consecutive: int = Field(default=3, ge=1, le=1000)
    model: HstModel | None = None
    fit: HstFitConfig | None = None

    @model_validator(mode="after")
    def _has_a_model(self) -> HstConfig:
        if self.model is None and self.fit is None:
            raise ValueError("an hst rule needs 'model' (coefficients) or 'fit' (from history)")
        if self.model is not None:
            expected = hst_term_names(self.degree, self.seasonal)
            if set(self.model.coefficients) != set(expected):
                raise ValueError(f"model.coefficients must name exactly {', '.join(expected)} "
                                 f"(degree {self.degree}, seasonal {self.seasonal})")
        if self.fit is not None and self.fit.holdout >= self.fit.history:
            raise ValueError("fit.holdout must be shorter than fit.history")
        if self.model is not None and self.fit is not None \
                and self.model.base_date != self.fit.base_date:
            raise ValueError(f"model.base_date {self.model.base_date} and fit.base_date "
                             f"{self.fit.base_date} differ: a refit would change what the "
                             "time-effect coefficients mean; give both the same date")
        return self

    def read_points(self) -> list[tuple[PathKey, str]]:
        return [(("point",), self.point), (("level",), self.level)]

    def level_refs(self) -> Iterator[tuple[PathKey, str]]:
        if isinstance(self.head_reference, str):
            yield ("head_reference",), self.head_reference

    def history_needs(self) -> Iterator[tuple[PathKey, float]]:
        if self.fit is not None:
            yield ("fit", "history"), self.fit.history


def base_day(date: dt.date, timezone: str) -> float:
    """00:00 site time of a date, in days since the Unix epoch (the fits' day scale)."""
    return dt.datetime.combine(date, dt.time(0), ZoneInfo(timezone)).timestamp() / 86400.0


def configured_model(config: HstConfig, timezone: str) -> HstFit | None:
    model = config.model
    if model is None:
        return None
    names = hst_term_names(config.degree, config.seasonal)
    coefficients = tuple(float(model.coefficients[name]) for name in names)
    # n is unknown for a model fitted elsewhere; p and rank are its number of terms.
    return HstFit(coefficients, config.degree, config.seasonal,
                  base_day(model.base_date, timezone), model.head_centre, 0, len(names),
                  len(names), model.s)


def bin_centre_days(bins: Sequence[int], bin_ms: int, offset_ms: int) -> np.ndarray:
    """The middle of each site-local bin, in days since the Unix epoch."""
    import numpy as np

    return ((np.array(bins, dtype=np.float64) + 0.5) * bin_ms - offset_ms) / DAY_MS


def _bin_means(readings: Sequence[Reading], bin_ms: int, offset_ms: int) -> dict[int, float]:
    sums: BinSums = {}
    add_to_bins(sums, readings, bin_ms, offset_ms)
    return means(sums)


def _rms(fit: HstFit, t: np.ndarray, head: np.ndarray, y: np.ndarray) -> float:
    import numpy as np

    from rules.statistics import hst_predict

    residual = y - hst_predict(fit, t, head)
    return float(np.sqrt(np.mean(residual * residual)))


FitOutcome = Literal["fitted", "too_few", "not_better"]


@dataclass(frozen=True)
class FitPlan:
    """How a rule fits its model: the bins, the time origin and the model's terms."""

    base_day: float  # fixed origin of time, days since the Unix epoch
    bin_ms: int
    offset_ms: int  # the site's offset from UTC: bins are site-local
    head_reference: float
    degree: int
    seasonal: bool
    min_samples: int
    holdout_ms: int


def fit_from_history(ys: Sequence[Reading], levels: Sequence[Reading], plan: FitPlan, *,
                     now_ms: int, excluded_bins: set[int],
                     old: HstFit | None) -> tuple[HstFit | None, FitOutcome]:
    """A new model from stored readings, or None and why not (too few, not better)."""
    return fit_from_bins(_bin_means(ys, plan.bin_ms, plan.offset_ms),
                         _bin_means(levels, plan.bin_ms, plan.offset_ms), plan,
                         now_ms=now_ms, excluded_bins=excluded_bins, old=old)


def fit_from_bins(y_bins: dict[int, float], level_bins: dict[int, float], plan: FitPlan, *,
                  now_ms: int, excluded_bins: set[int],
                  old: HstFit | None) -> tuple[HstFit | None, FitOutcome]:
    """``fit_from_history`` on the bin means of both series (bin number → mean)."""
    import numpy as np

    from rules.statistics import fit_hst

    bins = sorted(b for b in y_bins if b in level_bins and b not in excluded_bins)
    # Bins before the base date are left out: time effects start at the base date.
    t_all = bin_centre_days(bins, plan.bin_ms, plan.offset_ms)
    kept = t_all >= plan.base_day
    bins = [b for b, keep in zip(bins, kept, strict=True) if keep]
    p = len(hst_term_names(plan.degree, plan.seasonal))
    if len(bins) < max(plan.min_samples, p + 1):
        return None, "too_few"
    t = t_all[kept]
    head = np.array([level_bins[b] for b in bins]) - plan.head_reference
    y = np.array([y_bins[b] for b in bins])

    def fit(which: slice | np.ndarray) -> HstFit:
        return fit_hst(t[which], head[which], y[which], plan.degree, base_day=plan.base_day,
                       seasonal=plan.seasonal)

    everything = slice(None)
    if old is None:
        return fit(everything), "fitted"
    recent = t >= (now_ms - plan.holdout_ms) / DAY_MS
    if recent.sum() >= 3 and (~recent).sum() >= max(plan.min_samples, p + 1):
        # Judge the refit by how it predicts data it has not seen, against the model in
        # use; if it is not worse, take the fit on everything, the last days included.
        trial = fit(~recent)
        worse = (_rms(trial, t[recent], head[recent], y[recent])
                 > _WORSE_BY * _rms(old, t[recent], head[recent], y[recent]))
    else:
        worse = fit(everything).s > _WORSE_BY * old.s
    if worse:
        return None, "not_better"
    return fit(everything), "fitted"


class HstRule:
    def __init__(self, config: HstConfig, env: RuleEnv) -> None:
        if config.fit is not None:
            import rules.statistics  # noqa: F401  numpy, for the fits (see the imports)
        self.id = config.id
        self.point = config.point
        self.level = config.level
        self.inputs = (config.point,)
        self.alarm_points = (config.point,)
        self.unit = env.units.get(config.point, "")
        self.head_reference = resolve(env.levels, config.head_reference)
        self.fit_config = config.fit
        self.plan: FitPlan | None = None
        if config.fit is not None:
            self.plan = FitPlan(base_day(config.fit.base_date, env.timezone),
                                int(config.fit.bin * 1000), env.offset_ms,
                                self.head_reference, config.degree, config.seasonal,
                                config.fit.min_samples, int(config.fit.holdout * 1000))
        self.history: HistoryProvider | None = env.history
        self.level_max_age_ms = env.stale_after_ms(config.level)
        self.model = configured_model(config, env.timezone)
        self.next_fit_ms: int | None = None
        self.worker = env.worker
        self._fitting: Future[tuple[HstFit | None, FitOutcome]] | None = None
        self.debounce = Debounce(DelaySpec(samples=config.consecutive), None)
        self.flagged: deque[int] = deque(maxlen=_FLAGGED_KEPT)

    def restore_alarm(self, point: str, severity: Severity, side: str) -> None:
        self.debounce.restore(severity, side)

    def _refit(self, now_ms: int) -> None:
        """Refit when due. With a worker the fit (about 0.1 s per two years of hourly
        history) runs there and the model in use judges until it is done."""
        plan = self.plan
        if plan is None or self.history is None:
            return
        if self._fitting is not None:
            if not self._fitting.done():
                return
            done, self._fitting = self._fitting, None
            try:
                self._adopt(*done.result(), now_ms)
            except Exception:
                log.exception("hst_fit_failed", rule=self.id)
                self.next_fit_ms = now_ms + 3_600_000  # try again in an hour
            return
        if self.next_fit_ms is not None and now_ms < self.next_fit_ms:
            return
        excluded = {(ts + plan.offset_ms) // plan.bin_ms for ts in self.flagged}
        if self.worker is None:
            self._adopt(*self._fit(now_ms, excluded, self.model), now_ms)
        else:
            self._fitting = self.worker.submit(self._fit, now_ms, excluded, self.model)

    def _fit(self, now_ms: int, excluded_bins: set[int],
             old: HstFit | None) -> tuple[HstFit | None, FitOutcome]:
        """Read the history and fit (blocking: the worker's, when there is one)."""
        fit, plan = self.fit_config, self.plan
        assert fit is not None and plan is not None and self.history is not None
        start = now_ms - int(fit.history * 1000)
        # One page of one series at a time, each dropped once binned: a refit never holds
        # more than a page (HistoryReader.MAX_ROWS readings) as objects.
        y_bins = history_bin_means(self.history, self.point, start, now_ms, plan.bin_ms,
                                   plan.offset_ms)
        level_bins = history_bin_means(self.history, self.level, start, now_ms, plan.bin_ms,
                                       plan.offset_ms)
        return fit_from_bins(y_bins, level_bins, plan, now_ms=now_ms,
                             excluded_bins=excluded_bins, old=old)

    def _adopt(self, new: HstFit | None, outcome: FitOutcome, now_ms: int) -> None:
        fit = self.fit_config
        assert fit is not None
        log.info("hst_fit", rule=self.id, outcome=outcome, n=new.n if new else None,
                 s=new.s if new else None)
        if new is not None:
            self.model = new
        # Too little history yet: try again daily, not on every reading. A candidate no
        # better than the model in use waits for the next scheduled refit like a success.
        wait_s = min(fit.refit_every, 86400.0) if outcome == "too_few" else fit.refit_every
        self.next_fit_ms = now_ms + int(wait_s * 1000)

    def judge(self, reading: Reading, ctx: Context) -> Sequence[Judgement]:
        problem = input_problem(reading)
        if problem is not None:
            return [Stale(problem)]
        assert reading.value is not None
        self._refit(reading.ts_ms)
        if self.model is None:
            why = ("no_model: not enough history yet" if self.history is not None
                   else "no_model: no coefficients and no history provider")
            return [Stale(why)]
        if reading.ts_ms / DAY_MS < self.model.base_day:
            return [Stale("before_base_date: time effects start at the model's base date")]
        level, why = ctx.current(self.level, self.level_max_age_ms)
        if level is None:
            return [Stale(why or "no_level")]
        verdict = hst_residual_verdict(self.model, reading.ts_ms / DAY_MS,
                                       level - self.head_reference, reading.value)
        side = "above" if verdict.residual > 0 else "below"
        if verdict.level != "normal":
            self.flagged.append(reading.ts_ms)
        self.debounce.step(reading.ts_ms, None if verdict.level == "normal" else verdict.level,
                           side)
        severity = self.debounce.severity
        limit = None
        if severity is not None:
            k = 3.0 if severity == "alarm" else 2.0
            limit = k * verdict.s if self.debounce.side == "above" else -k * verdict.s
        return [Verdict(severity, verdict.residual, limit, self.debounce.side, unit=self.unit,
                        quantity="residual")]


def build(config: HstConfig, env: RuleEnv) -> HstRule:
    return HstRule(config, env)


RULE_TYPE = RuleType(HstConfig, build)
