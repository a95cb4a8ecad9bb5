"""Statistics of dam-safety monitoring series: gross-error screening, HST model, lag.

Reference sections (``/work/shared/domain/reservoir.md``):

* §3.3 gross-error (粗差) screening. :func:`pauta_outliers` is the batch 3σ (Pauta,
  拉依达) criterion; :func:`mad_scores` and :func:`robust_outliers` are the robust
  median/MAD alternative used where Pauta fails (short, step-like or oscillating
  series); :class:`OnlineGrossErrorScreen` (from :mod:`rules.smallstats`, re-exported
  here) screens each new reading against the previous good readings, as a gateway must,
  and marks gross errors ``suspect``.
* §3.1 HST (hydrostatic–season–time) regression, the standard model for displacement
  and, with variants, for piezometers and seepage flow. :func:`fit_hst` fits it by least
  squares with an orthogonal-decomposition solver and :func:`hst_residual_verdict`
  applies the confidence-interval method (置信区间法): a residual beyond 2S is a warning,
  beyond 3S an alarm.
* §3.2 lag correlation between reservoir level and a piezometer: :func:`lag_correlation`
  finds the seepage lag that maximises Pearson r.

Everything here is numpy on float64 arrays; inputs must be finite (gaps are the caller's
business, because how to bridge them depends on the quantity). Importing this module
loads numpy (about 12 MiB of the daemon's RSS), so the daemon imports it only for an HST
rule that fits its model from history; what runs per reading (the gross-error screen, an
HST model's verdict, Pearson r) is in the numpy-free :mod:`rules.smallstats`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

# The per-reading pieces are numpy-free, so that the daemon needs numpy only to fit an
# HST model from history; they are re-exported here.
from rules.smallstats import (
    DAYS_PER_YEAR,
    MAD_CONSISTENCY,
    MEAN_AD_CONSISTENCY,
    PAUTA_MIN_SAMPLES,
    THETA_DAYS,
    GrossErrorVerdict,
    HstFit,
    HstVerdict,
    OnlineGrossErrorScreen,
    check_hst_degree,
    hst_residual_verdict,
    hst_term_names,
)

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

    Refuses (ValueError) fewer than :data:`PAUTA_MIN_SAMPLES` (11) values: at n ≤ 10
    even a wild value cannot reach 3s, since max|xᵢ − x̄|/s ≤ (n − 1)/√n = 2.846, so an
    answer of "no outliers" would be a verdict the test cannot give. Use
    :func:`robust_outliers` for short series. Once values are flagged, the iteration
    stops when fewer than 11 remain, for the same reason.
    """
    values = _series(x)
    if values.size < PAUTA_MIN_SAMPLES:
        raise ValueError(
            f"Pauta (3σ) cannot judge {values.size} values: at n ≤ 10 no value can lie "
            f"beyond 3s; it needs at least {PAUTA_MIN_SAMPLES} (use robust_outliers)")
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
    return median, MEAN_AD_CONSISTENCY * float(absolute.mean())


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


# --- §3.1 HST model ------------------------------------------------------------------

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
    check_hst_degree(degree)
    t_abs = _series(t_days, "t_days")
    h = _series(head, "head") - head_centre
    if t_abs.shape != h.shape:
        raise ValueError(f"t_days and head differ in length: {t_abs.size} != {h.size}")
    t = t_abs - base_day
    theta = t / THETA_DAYS
    if np.any(theta <= -1.0):
        raise ValueError("readings 100 days or more before base_day make ln(1 + θ) undefined")
    columns = [h**i for i in range(degree + 1)]
    if seasonal:
        for j in (1, 2):
            angle = 2.0 * np.pi * j * t / DAYS_PER_YEAR
            columns += [np.sin(angle), np.cos(angle)]
    columns += [theta, np.log1p(theta)]
    return np.column_stack(columns)


def fit_hst(
    t_days: Sequence[float] | npt.ArrayLike,
    head: Sequence[float] | npt.ArrayLike,
    y: Sequence[float] | npt.ArrayLike,
    degree: int = 3,
    *,
    base_day: float,
    seasonal: bool = True,
) -> HstFit:
    """Fit the HST model to observations ``y`` by least squares (§3.1).

    Solved with :func:`numpy.linalg.lstsq` (SVD), never the normal equations, which
    square the condition number of an already ill-conditioned polynomial design. The
    head is centred on its mean. Fit on readings without gross errors or flagged
    anomalies; refit on a schedule.

    ``base_day`` (same day scale as ``t_days``) is the fixed origin of time, the first
    impoundment or the start of monitoring: it is required, because the time-effect
    terms θ and ln(1 + θ) mean something only from a fixed date. Taking the oldest
    reading of each window instead would give every refit a different origin, and
    creep coefficients that cannot be compared from one refit to the next.
    """
    t = _series(t_days, "t_days")
    h = _series(head, "head")
    obs = _series(y, "y")
    if obs.shape != t.shape:
        raise ValueError(f"y and t_days differ in length: {obs.size} != {t.size}")
    if t.size == 0:
        raise ValueError("no readings to fit")
    base = float(base_day)
    if not math.isfinite(base):
        raise ValueError(f"base_day must be a finite day number, got {base_day}")
    centre = float(h.mean()) if h.size else 0.0
    design = hst_design_matrix(t, h, base, degree, seasonal, centre)
    n, p = design.shape
    if n <= p:
        raise ValueError(f"HST fit needs more readings than its {p} coefficients, got {n}")
    coefficients, _, rank, _ = np.linalg.lstsq(design, obs, rcond=None)
    residuals = obs - design @ coefficients
    rss = float(residuals @ residuals)
    s = math.sqrt(rss / (n - int(rank)))
    return HstFit(
        coefficients=tuple(float(c) for c in coefficients),
        degree=degree,
        seasonal=seasonal,
        base_day=base,
        head_centre=centre,
        n=n,
        p=p,
        rank=int(rank),
        s=s,
    )


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


def hst_predict(fit: HstFit, t_days: Sequence[float] | npt.ArrayLike,
                head: Sequence[float] | npt.ArrayLike) -> FloatArray:
    """Model values ŷ of a fit at the given days and heads, as an array."""
    design = hst_design_matrix(t_days, head, fit.base_day, fit.degree, fit.seasonal,
                               fit.head_centre)
    return design @ np.asarray(fit.coefficients, dtype=np.float64)
