"""Statistics of dam-safety monitoring series: gross-error screening, HST model, lag.

Reference sections (``/work/shared/domain/reservoir.md``):

* §3.3 gross-error (粗差) screening. :func:`pauta_outliers` is the batch 3σ (Pauta,
  拉依达) criterion; :func:`mad_scores` and :func:`robust_outliers` are the robust
  median/MAD alternative used where Pauta fails (short, step-like or oscillating
  series); :class:`OnlineGrossErrorScreen` screens each new reading against the previous
  good readings, as a gateway must, and marks gross errors ``suspect``.
* §3.1 HST (hydrostatic–season–time) regression, the standard model for displacement
  and, with variants, for piezometers and seepage flow. :func:`fit_hst` fits it by least
  squares with an orthogonal-decomposition solver and :func:`hst_residual_verdict`
  applies the confidence-interval method (置信区间法): a residual beyond 2S is a warning,
  beyond 3S an alarm.
* §3.2 lag correlation between reservoir level and a piezometer: :func:`lag_correlation`
  finds the seepage lag that maximises Pearson r.

Everything here is pure numpy on float64 arrays; inputs must be finite (gaps are the
caller's business, because how to bridge them depends on the quantity).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import numpy.typing as npt

__all__ = [
    "MAD_CONSISTENCY",
    "PAUTA_MIN_SAMPLES",
    "GrossErrorVerdict",
    "HstFit",
    "HstVerdict",
    "LagCorrelation",
    "OnlineGrossErrorScreen",
    "fit_hst",
    "hst_design_matrix",
    "hst_residual_verdict",
    "hst_term_names",
    "lag_correlation",
    "mad_scores",
    "pauta_outliers",
    "robust_outliers",
]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

PAUTA_MIN_SAMPLES = 11
"""Smallest sample on which the batch 3σ test can flag anything.

For any sample, max|xᵢ − x̄|/s ≤ (n − 1)/√n (Samuelson's inequality), which is 2.846 at
n = 10 and 3.015 at n = 11 (§3.3). Practice asks for n ≥ 20.
"""

MAD_CONSISTENCY = 0.6745
"""Iglewicz–Hoaglin factor: 0.6745·(x − median)/MAD is a z-score for normal data."""

# When MAD is 0 (more than half the values equal the median, typical of a sensor sitting
# on one resolution step) the scale falls back to the mean absolute deviation; 1.253314 =
# √(π/2) makes it a consistent σ estimate for normal data, as in common practice
# (e.g. IBM SPSS's modified z-score).
_MEAN_AD_CONSISTENCY = math.sqrt(math.pi / 2.0)

# Too few good readings for even a median/MAD estimate: take them on trust.
_ROBUST_MIN_SAMPLES = 3


def _series(x: Sequence[float] | npt.ArrayLike, name: str = "x") -> FloatArray:
    values = np.asarray(x, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {values.shape}")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return values


# --- §3.3 gross-error screening ------------------------------------------------------


def pauta_outliers(x: Sequence[float] | npt.ArrayLike, sigma: float = 3.0) -> BoolArray:
    """Flag gross errors by the iterative batch 3σ (Pauta) criterion.

    Computes x̄ and s (n − 1 denominator) of the values not yet flagged, flags the one
    with the largest |xᵢ − x̄| if it exceeds ``sigma``·s, and repeats until nothing more
    is flagged. Removing the worst value first matters because a large gross error
    inflates s and masks a smaller one.

    Returns all False while fewer than :data:`PAUTA_MIN_SAMPLES` (11) values remain: at
    n ≤ 10 even a wild value cannot reach 3s, since max|xᵢ − x̄|/s ≤ (n − 1)/√n = 2.846.
    Use :func:`robust_outliers` for short series.
    """
    values = _series(x)
    flagged = np.zeros(values.size, dtype=bool)
    while values.size - int(flagged.sum()) >= PAUTA_MIN_SAMPLES:
        good = values[~flagged]
        mean = float(good.mean())
        s = float(good.std(ddof=1))
        if s == 0.0:
            break
        deviation = np.abs(values - mean)
        deviation[flagged] = -1.0
        worst = int(np.argmax(deviation))
        if deviation[worst] <= sigma * s:
            break
        flagged[worst] = True
    return flagged


def _robust_centre_scale(values: FloatArray) -> tuple[float, float]:
    """Median and a σ-consistent robust scale (MAD/0.6745, or the mean-AD fallback)."""
    median = float(np.median(values))
    absolute = np.abs(values - median)
    mad = float(np.median(absolute))
    if mad > 0.0:
        return median, mad / MAD_CONSISTENCY
    return median, _MEAN_AD_CONSISTENCY * float(absolute.mean())


def mad_scores(x: Sequence[float] | npt.ArrayLike) -> FloatArray:
    """Modified z-scores M = 0.6745·(x − median)/MAD (Iglewicz and Hoaglin).

    When MAD = 0 the scale is 1.253314 × the mean absolute deviation instead; when that
    is 0 too, every value equals the median and every score is 0.
    """
    values = _series(x)
    if values.size == 0:
        return values.copy()
    median, scale = _robust_centre_scale(values)
    if scale == 0.0:
        return np.zeros_like(values)
    return (values - median) / scale


def robust_outliers(
    x: Sequence[float] | npt.ArrayLike, limit: float = 3.5, floor: float = 0.0
) -> BoolArray:
    """Flag values with |M| > ``limit`` (3.5 by convention) and |x − median| > ``floor``.

    ``floor`` is an absolute deviation below which nothing is flagged, so that a sensor
    resting on one resolution step is not condemned for its next step.
    """
    values = _series(x)
    if values.size == 0:
        return np.zeros(0, dtype=bool)
    scores = mad_scores(values)
    return (np.abs(scores) > limit) & (np.abs(values - np.median(values)) > floor)


class GrossErrorVerdict(NamedTuple):
    """Outcome of screening one reading.

    ``score`` is the deviation from the window's centre divided by the window's scale,
    where the scale is raised to at least floor/threshold so that ``score > threshold``
    exactly when ``suspect``. The threshold is ``sigma`` for ``"pauta"`` and
    ``robust_limit`` for ``"mad"``; ``"warmup"`` readings are accepted with score 0.
    """

    suspect: bool
    score: float
    method: Literal["pauta", "mad", "warmup"]


class OnlineGrossErrorScreen:
    """Screen a sensor's readings one at a time for gross errors (§3.3, online form).

    Each reading is compared with the previous ``window`` *good* readings, itself
    excluded:

    * with at least ``min_samples`` good readings, by the 3σ rule: suspect if
      |x − mean| > max(``sigma``·s, ``floor``), s with the n − 1 denominator;
    * with fewer, by the robust score: suspect if |x − median| > max(``robust_limit`` ·
      MAD/0.6745, ``floor``) (mean-AD fallback when MAD = 0), because a standard
      deviation from a handful of values is too uncertain to set a 3σ limit on;
    * with fewer than 3, the reading is accepted unchecked (``"warmup"``); a sensor
      that starts with a gross error is for the physical-range check to catch.

    ``floor`` (δ, > 0) is the absolute deviation that is never suspect; set it to a
    few resolution steps (e.g. 0.02–0.03 m for a level read to 0.01 m) so that a flat
    sensor, whose s is nearly 0, does not flag its own quantisation.

    Suspect readings are kept out of the window so that a gross error does not widen
    the limits for the next one. A genuine step, though (a flood rise faster than the
    window expected, a re-zeroed sensor), would then be suspect for ever and, since a
    suspect reading raises no threshold alarm on its own, silence the sensor. So after
    ``reseed_after`` consecutive suspect readings the screen accepts that the process
    has moved: it restarts the window from those readings (the verdicts already given
    stand). ``reseed_after=None`` disables this.
    """

    def __init__(
        self,
        window: int,
        *,
        floor: float,
        sigma: float = 3.0,
        min_samples: int = PAUTA_MIN_SAMPLES,
        robust_limit: float = 3.5,
        reseed_after: int | None = 5,
    ) -> None:
        if min_samples < _ROBUST_MIN_SAMPLES:
            raise ValueError(f"min_samples must be at least {_ROBUST_MIN_SAMPLES}")
        if window < min_samples:
            raise ValueError(f"window ({window}) must hold at least min_samples ({min_samples})")
        if not (math.isfinite(floor) and floor > 0.0):
            raise ValueError(f"floor must be a positive absolute deviation, got {floor}")
        if not (sigma > 0.0 and robust_limit > 0.0):
            raise ValueError("sigma and robust_limit must be positive")
        if reseed_after is not None and reseed_after < 1:
            raise ValueError("reseed_after must be at least 1, or None")
        self.window = window
        self.floor = floor
        self.sigma = sigma
        self.min_samples = min_samples
        self.robust_limit = robust_limit
        self.reseed_after = reseed_after
        self._good: deque[float] = deque(maxlen=window)
        self._suspect_run: list[float] = []

    @property
    def good_values(self) -> tuple[float, ...]:
        """The window of good readings, oldest first."""
        return tuple(self._good)

    def check(self, value: float) -> GrossErrorVerdict:
        """Judge ``value`` against the window, then update the window."""
        if not math.isfinite(value):
            raise ValueError(f"cannot screen a non-finite reading: {value}")
        verdict = self._judge(float(value))
        if verdict.suspect:
            self._suspect_run.append(float(value))
            if self.reseed_after is not None and len(self._suspect_run) >= self.reseed_after:
                self._good.clear()
                self._good.extend(self._suspect_run)
                self._suspect_run.clear()
        else:
            self._good.append(float(value))
            self._suspect_run.clear()
        return verdict

    def _judge(self, value: float) -> GrossErrorVerdict:
        count = len(self._good)
        if count < _ROBUST_MIN_SAMPLES:
            return GrossErrorVerdict(False, 0.0, "warmup")
        history = np.fromiter(self._good, dtype=np.float64, count=count)
        if count < self.min_samples:
            centre, scale = _robust_centre_scale(history)
            threshold, method = self.robust_limit, "mad"
        else:
            centre, scale = float(history.mean()), float(history.std(ddof=1))
            threshold, method = self.sigma, "pauta"
        score = abs(value - centre) / max(scale, self.floor / threshold)
        return GrossErrorVerdict(score > threshold, score, method)

    def reset(self) -> None:
        """Forget every reading, e.g. after the sensor was replaced or recalibrated."""
        self._good.clear()
        self._suspect_run.clear()


# --- §3.1 HST model ------------------------------------------------------------------

_DAYS_PER_YEAR = 365.0
_THETA_DAYS = 100.0


def hst_term_names(degree: int = 3, seasonal: bool = True) -> tuple[str, ...]:
    """Names of the design-matrix columns, in order, for reports and diagnostics."""
    _check_degree(degree)
    names = ["a0", *(f"a{i}" for i in range(1, degree + 1))]
    if seasonal:
        names += ["b11", "b21", "b12", "b22"]
    names += ["c1", "c2"]
    return tuple(names)


def _check_degree(degree: int) -> None:
    if degree not in (3, 4):
        raise ValueError(f"HST hydrostatic degree must be 3 or 4, got {degree}")


def hst_design_matrix(
    t_days: Sequence[float] | npt.ArrayLike,
    head: Sequence[float] | npt.ArrayLike,
    base_day: float,
    degree: int = 3,
    seasonal: bool = True,
    head_centre: float = 0.0,
) -> FloatArray:
    """Build the HST regression matrix, one row per reading (§3.1).

    Columns (see :func:`hst_term_names`):

    * hydrostatic: 1, h, h², …, h^degree with h = head − ``head_centre`` (m); centring
      keeps the powers from being nearly collinear over a narrow range of head;
    * seasonal, if ``seasonal``: sin(2πjt/365), cos(2πjt/365) for j = 1, 2, stored as
      sin1, cos1, sin2, cos2;
    * time effect: θ and ln(1 + θ), θ = t/100.

    ``t_days`` and ``base_day`` are on the same day scale (e.g. days since the Unix
    epoch, fractional allowed); t = ``t_days`` − ``base_day``, and t must exceed −100
    so that ln(1 + θ) is defined.
    """
    _check_degree(degree)
    t_abs = _series(t_days, "t_days")
    h = _series(head, "head") - head_centre
    if t_abs.shape != h.shape:
        raise ValueError(f"t_days and head differ in length: {t_abs.size} != {h.size}")
    t = t_abs - base_day
    theta = t / _THETA_DAYS
    if np.any(theta <= -1.0):
        raise ValueError("readings 100 days or more before base_day make ln(1 + θ) undefined")
    columns = [h**i for i in range(degree + 1)]
    if seasonal:
        for j in (1, 2):
            angle = 2.0 * np.pi * j * t / _DAYS_PER_YEAR
            columns += [np.sin(angle), np.cos(angle)]
    columns += [theta, np.log1p(theta)]
    return np.column_stack(columns)


@dataclass(frozen=True, eq=False)
class HstFit:
    """A fitted HST model.

    ``coefficients`` follow :func:`hst_term_names` and apply to the centred head. With a
    narrow range of head the hydrostatic coefficients are individually unstable while
    the fitted values are not, so judge a fit by ``s`` and predictions, not by them.
    ``s`` = sqrt(RSS/(n − p)); when the design is rank-deficient (e.g. a level that never
    moved), the degrees of freedom use the numerical ``rank`` instead of p.
    """

    coefficients: FloatArray
    degree: int
    seasonal: bool
    base_day: float
    head_centre: float
    n: int
    p: int
    rank: int
    s: float

    def predict(
        self, t_days: Sequence[float] | npt.ArrayLike, head: Sequence[float] | npt.ArrayLike
    ) -> FloatArray:
        """Model values ŷ at the given days and heads."""
        design = hst_design_matrix(
            t_days, head, self.base_day, self.degree, self.seasonal, self.head_centre
        )
        return design @ self.coefficients

    @property
    def term_names(self) -> tuple[str, ...]:
        return hst_term_names(self.degree, self.seasonal)


def fit_hst(
    t_days: Sequence[float] | npt.ArrayLike,
    head: Sequence[float] | npt.ArrayLike,
    y: Sequence[float] | npt.ArrayLike,
    degree: int = 3,
    base_day: float | None = None,
    seasonal: bool = True,
) -> HstFit:
    """Fit the HST model to observations ``y`` by least squares (§3.1).

    Solved with :func:`numpy.linalg.lstsq` (SVD), never the normal equations, which
    square the condition number of an already ill-conditioned polynomial design. The
    head is centred on its mean. ``base_day`` defaults to the first day in ``t_days``.
    Fit on readings without gross errors or flagged anomalies; refit on a schedule.
    """
    t = _series(t_days, "t_days")
    h = _series(head, "head")
    obs = _series(y, "y")
    if obs.shape != t.shape:
        raise ValueError(f"y and t_days differ in length: {obs.size} != {t.size}")
    if t.size == 0:
        raise ValueError("no readings to fit")
    base = float(t.min()) if base_day is None else float(base_day)
    centre = float(h.mean()) if h.size else 0.0
    design = hst_design_matrix(t, h, base, degree, seasonal, centre)
    n, p = design.shape
    if n <= p:
        raise ValueError(f"HST fit needs more readings than its {p} coefficients, got {n}")
    coefficients, _, rank, _ = np.linalg.lstsq(design, obs, rcond=None)
    coefficients.setflags(write=False)
    residuals = obs - design @ coefficients
    rss = float(residuals @ residuals)
    s = math.sqrt(rss / (n - int(rank)))
    return HstFit(
        coefficients=coefficients,
        degree=degree,
        seasonal=seasonal,
        base_day=base,
        head_centre=centre,
        n=n,
        p=p,
        rank=int(rank),
        s=s,
    )


class HstVerdict(NamedTuple):
    """A new reading judged against an HST fit: level, y − ŷ, and the fit's S."""

    level: Literal["normal", "warning", "alarm"]
    residual: float
    s: float


def hst_residual_verdict(fit: HstFit, t_day: float, head: float, y: float) -> HstVerdict:
    """Classify one reading by its residual: > 3S alarm, > 2S warning, else normal.

    This judges a single reading; requiring several consecutive exceedances (≥ 3 in
    §4) before alarming is the rule engine's choice.
    """
    predicted = float(fit.predict([t_day], [head])[0])
    residual = float(y) - predicted
    size = abs(residual)
    if size > 3.0 * fit.s:
        level: Literal["normal", "warning", "alarm"] = "alarm"
    elif size > 2.0 * fit.s:
        level = "warning"
    else:
        level = "normal"
    return HstVerdict(level, residual, fit.s)


# --- §3.2 lag correlation ------------------------------------------------------------


class LagCorrelation(NamedTuple):
    """Result of :func:`lag_correlation`.

    ``r_by_lag[L]`` is Pearson r between piezo(t) and level(t − L); it is NaN where a
    series is constant over the overlap, and ``best_lag`` is ``None`` (``r`` NaN) when
    every lag is NaN.
    """

    best_lag: int | None
    r: float
    r_by_lag: FloatArray


def lag_correlation(
    level: Sequence[float] | npt.ArrayLike,
    piezo: Sequence[float] | npt.ArrayLike,
    max_lag: int,
) -> LagCorrelation:
    """Find the lag L in 0…``max_lag`` samples that maximises r(piezo(t), level(t − L)).

    Both series are sampled at the same equally spaced instants (e.g. daily means), so
    the lag is in samples. A piezometer lags the reservoir, so only non-negative lags
    are searched. Each r uses the overlap of n − L pairs; at least 3 are required.
    """
    x = _series(level, "level")
    y = _series(piezo, "piezo")
    if x.shape != y.shape:
        raise ValueError(f"level and piezo differ in length: {x.size} != {y.size}")
    if max_lag < 0:
        raise ValueError("max_lag must be non-negative")
    if x.size - max_lag < 3:
        raise ValueError(f"{x.size} samples leave fewer than 3 pairs at lag {max_lag}")
    r_by_lag = np.full(max_lag + 1, np.nan)
    for lag in range(max_lag + 1):
        leading = x[: x.size - lag]
        lagging = y[lag:]
        a = leading - leading.mean()
        b = lagging - lagging.mean()
        denominator = math.sqrt(float(a @ a) * float(b @ b))
        if denominator > 0.0:
            r_by_lag[lag] = float(a @ b) / denominator
    if np.all(np.isnan(r_by_lag)):
        return LagCorrelation(None, math.nan, r_by_lag)
    best = int(np.nanargmax(r_by_lag))
    return LagCorrelation(best, float(r_by_lag[best]), r_by_lag)
