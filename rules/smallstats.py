"""Statistics the gateway computes per reading, in pure Python: no numpy on the hot path.

The online gross-error screen (domain reference §3.3) judges each reading against a short
window of previous good readings, an HST model (§3.1) predicts one value per reading from
a dozen terms, and the lag-correlation rule computes one Pearson r per completed bin: tens
of values at most, where plain Python is faster than numpy and needs none of its memory
(importing numpy costs the daemon about 12 MiB of RSS, see docs/performance.md).
``rules.statistics`` keeps the batch, array-based methods (Pauta, MAD scores, the HST
least-squares fit, the lag search) and re-exports what is defined here; the daemon
imports it only to fit an HST model from history.

Sums use :func:`math.fsum` (exactly rounded), so results agree with the numpy versions
to the last bits at most.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, NamedTuple

if TYPE_CHECKING:
    pass

__all__ = [
    "MAD_CONSISTENCY",
    "PAUTA_MIN_SAMPLES",
    "GrossErrorVerdict",
    "HstFit",
    "HstVerdict",
    "LineFit",
    "OnlineGrossErrorScreen",
    "hst_residual_verdict",
    "hst_row",
    "hst_term_names",
    "line_fit",
    "median",
    "pearson_r",
]

# --- §3.3 gross-error screening, one reading at a time --------------------------------

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
MEAN_AD_CONSISTENCY = math.sqrt(math.pi / 2.0)

# Too few good readings for even a median/MAD estimate: take them on trust.
ROBUST_MIN_SAMPLES = 3


def _median(values: Iterable[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2.0


def median(values: Iterable[float]) -> float:
    """The median of at least one value (no ``statistics`` import: it costs the daemon
    several ms of start-up for one function)."""
    return _median(values)


def robust_centre_scale(values: Sequence[float]) -> tuple[float, float]:
    """Median and a σ-consistent robust scale (MAD/0.6745, or the mean-AD fallback)."""
    median = _median(values)
    absolute = [abs(v - median) for v in values]
    mad = _median(absolute)
    if mad > 0.0:
        return median, mad / MAD_CONSISTENCY
    return median, MEAN_AD_CONSISTENCY * (math.fsum(absolute) / len(absolute))


def mean_and_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n − 1 denominator) of at least 2 values."""
    n = len(values)
    mean = math.fsum(values) / n
    # math.dist is sqrt(Σ(v − mean)²), accurately and in C: faster than numpy up to the
    # largest window (10,000 values, 0.26 ms).
    return mean, math.dist(values, [mean] * n) / math.sqrt(n - 1)


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
        if min_samples < ROBUST_MIN_SAMPLES:
            raise ValueError(f"min_samples must be at least {ROBUST_MIN_SAMPLES}")
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
        # The current run of suspect readings, for reseeding: bounded, so that a sensor
        # suspect for months (reseed_after=None) holds no growing list.
        self._suspect_run: deque[float] = deque(maxlen=reseed_after or 1)

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
        if count < ROBUST_MIN_SAMPLES:
            return GrossErrorVerdict(False, 0.0, "warmup")
        history = tuple(self._good)
        if count < self.min_samples:
            centre, scale = robust_centre_scale(history)
            threshold, method = self.robust_limit, "mad"
        else:
            centre, scale = mean_and_sd(history)
            threshold, method = self.sigma, "pauta"
        score = abs(value - centre) / max(scale, self.floor / threshold)
        return GrossErrorVerdict(score > threshold, score, method)

    def reset(self) -> None:
        """Forget every reading, e.g. after the sensor was replaced or recalibrated."""
        self._good.clear()
        self._suspect_run.clear()


# --- §3.1 HST model: its terms, and one reading judged against it ---------------------

DAYS_PER_YEAR = 365.0
THETA_DAYS = 100.0


def check_hst_degree(degree: int) -> None:
    if degree not in (3, 4):
        raise ValueError(f"HST hydrostatic degree must be 3 or 4, got {degree}")


def hst_term_names(degree: int = 3, seasonal: bool = True) -> tuple[str, ...]:
    """Names of the design-matrix columns, in order, for reports and diagnostics."""
    check_hst_degree(degree)
    names = ["a0", *(f"a{i}" for i in range(1, degree + 1))]
    if seasonal:
        names += ["b11", "b21", "b12", "b22"]
    names += ["c1", "c2"]
    return tuple(names)


def hst_row(t_day: float, head: float, base_day: float, degree: int = 3,
            seasonal: bool = True, head_centre: float = 0.0) -> list[float]:
    """One row of the HST design matrix: ``rules.statistics.hst_design_matrix`` for a
    single reading (the same terms in the same order; equal to it up to rounding)."""
    check_hst_degree(degree)
    if not (math.isfinite(t_day) and math.isfinite(head)):
        raise ValueError("t_day and head must be finite")
    h = head - head_centre
    t = t_day - base_day
    theta = t / THETA_DAYS
    if theta <= -1.0:
        raise ValueError("readings 100 days or more before base_day make ln(1 + θ) undefined")
    row = [h**i for i in range(degree + 1)]
    if seasonal:
        for j in (1, 2):
            angle = 2.0 * math.pi * j * t / DAYS_PER_YEAR
            row += [math.sin(angle), math.cos(angle)]
    row += [theta, math.log1p(theta)]
    return row


@dataclass(frozen=True, eq=False)
class HstFit:
    """A fitted HST model.

    ``coefficients`` follow :func:`hst_term_names` and apply to the centred head. With a
    narrow range of head the hydrostatic coefficients are individually unstable while
    the fitted values are not, so judge a fit by ``s`` and predictions, not by them.
    ``s`` = sqrt(RSS/(n − p)); when the design is rank-deficient (e.g. a level that never
    moved), the degrees of freedom use the numerical ``rank`` instead of p. The
    coefficients are plain floats, so a model configured from an offline analysis judges
    readings without numpy.
    """

    coefficients: tuple[float, ...]
    degree: int
    seasonal: bool
    base_day: float
    head_centre: float
    n: int
    p: int
    rank: int
    s: float

    def predict_one(self, t_day: float, head: float) -> float:
        """ŷ for one reading, without numpy."""
        row = hst_row(t_day, head, self.base_day, self.degree, self.seasonal,
                      self.head_centre)
        return math.fsum(c * x for c, x in zip(self.coefficients, row, strict=True))

    @property
    def term_names(self) -> tuple[str, ...]:
        return hst_term_names(self.degree, self.seasonal)


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
    residual = float(y) - fit.predict_one(t_day, head)
    size = abs(residual)
    if size > 3.0 * fit.s:
        level: Literal["normal", "warning", "alarm"] = "alarm"
    elif size > 2.0 * fit.s:
        level = "warning"
    else:
        level = "normal"
    return HstVerdict(level, residual, fit.s)


# --- §3.2 Pearson r ---------------------------------------------------------------------


def pearson_r(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson r of two equally long series of finite values; NaN if either is constant.

    Constancy is tested exactly (min == max) rather than through a zero denominator,
    because the mean of equal values can miss them by an ulp and leave noise to divide.
    """
    if len(x) != len(y):
        raise ValueError(f"series differ in length: {len(x)} != {len(y)}")
    if len(x) < 3:
        raise ValueError(f"Pearson r needs at least 3 pairs, got {len(x)}")
    if not all(math.isfinite(v) for v in (*x, *y)):
        raise ValueError("series contain NaN or infinite values")
    if min(x) == max(x) or min(y) == max(y):
        return math.nan
    mean_x, mean_y = math.fsum(x) / len(x), math.fsum(y) / len(y)
    a = [v - mean_x for v in x]
    b = [v - mean_y for v in y]
    denominator = math.sqrt(math.fsum(v * v for v in a) * math.fsum(v * v for v in b))
    if denominator == 0.0:  # underflow of tiny deviations
        return math.nan
    return math.fsum(p * q for p, q in zip(a, b, strict=True)) / denominator


# --- §4 a level against the reservoir: a straight line and its prediction error -------


@dataclass(frozen=True)
class LineFit:
    """y = a + b·x fitted by least squares to n pairs, with its residual s (n − 2 d.f.)."""

    a: float
    b: float
    n: int
    mean_x: float
    sxx: float  # Σ(x − x̄)²
    s: float

    def predict(self, x: float) -> float:
        return self.a + self.b * x

    def prediction_se(self, x: float) -> float:
        """Standard error of a new observation at x: s·√(1 + 1/n + (x − x̄)²/Sxx).

        The textbook prediction interval of simple regression: the scatter about the line
        plus the uncertainty of the line itself, which grows away from the x the fit saw.
        """
        return self.s * math.sqrt(1.0 + 1.0 / self.n + (x - self.mean_x) ** 2 / self.sxx)


def line_fit(x: Sequence[float], y: Sequence[float]) -> LineFit | None:
    """Least-squares line through the pairs, or None when x never varies (no slope).

    Centred sums (x − x̄, y − ȳ) keep the precision of levels of a hundred metres that
    vary by centimetres; a few hundred daily pairs cost well under a millisecond.
    """
    n = len(x)
    if n != len(y):
        raise ValueError(f"series differ in length: {n} != {len(y)}")
    if n < 3:
        raise ValueError(f"a line with its residual needs at least 3 pairs, got {n}")
    mean_x, mean_y = math.fsum(x) / n, math.fsum(y) / n
    dx = [v - mean_x for v in x]
    dy = [v - mean_y for v in y]
    sxx = math.fsum(d * d for d in dx)
    if sxx == 0.0:
        return None
    b = math.fsum(p * q for p, q in zip(dx, dy, strict=True)) / sxx
    a = mean_y - b * mean_x
    rss = math.fsum((q - b * p) ** 2 for p, q in zip(dx, dy, strict=True))
    return LineFit(a, b, n, mean_x, sxx, math.sqrt(rss / (n - 2)))
