"""The numpy-free per-reading statistics agree with their numpy counterparts."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from rules.smallstats import OnlineGrossErrorScreen, hst_residual_verdict, pearson_r
from rules.statistics import fit_hst, hst_design_matrix, lag_correlation


def test_pearson_r_matches_the_numpy_lag_correlation_at_lag_zero() -> None:
    rng = random.Random(3)
    for n in (3, 10, 60, 400):
        x = [rng.gauss(120.0, 2.0) for _ in range(n)]
        y = [0.4 * v + rng.gauss(0.0, 0.5) for v in x]
        assert pearson_r(x, y) == pytest.approx(lag_correlation(x, y, 0).r, rel=1e-12)


def test_pearson_r_of_a_constant_series_is_undefined() -> None:
    # The mean of 3 × 0.1 is not 0.1 in floating point: constancy is tested exactly.
    assert math.isnan(pearson_r([0.1, 0.1, 0.1], [1.0, 2.0, 3.0]))
    assert math.isnan(pearson_r([1.0, 2.0, 3.0], [123.45] * 3))
    assert pearson_r([1.0, 2.0, 3.0], [2.0, 4.0, 6.0]) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        pearson_r([1.0, 2.0], [1.0, 2.0])
    with pytest.raises(ValueError):
        pearson_r([1.0, math.nan, 3.0], [1.0, 2.0, 3.0])


def test_online_screen_scores_match_numpy_mean_and_std() -> None:
    rng = random.Random(5)
    screen = OnlineGrossErrorScreen(50, floor=1e-6, reseed_after=None)
    for _ in range(200):
        value = rng.gauss(100.0, 0.05)
        window = np.array(screen.good_values)
        verdict = screen.check(value)
        if verdict.method == "pauta":
            expected = abs(value - window.mean()) / max(window.std(ddof=1), 1e-6 / 3.0)
            assert verdict.score == pytest.approx(expected, rel=1e-12)


def test_online_screen_holds_no_growing_run_of_suspect_readings() -> None:
    screen = OnlineGrossErrorScreen(20, floor=0.02, reseed_after=None)
    for _ in range(20):
        screen.check(100.0)
    for _ in range(1000):
        assert screen.check(150.0).suspect
    assert len(screen._suspect_run) <= 1


def test_hst_verdict_without_numpy_predicts_like_the_design_matrix() -> None:
    rng = np.random.default_rng(11)
    t = 19000.0 + np.arange(800) * 1.0
    head = 10.0 + 3.0 * np.sin(t / 40.0)
    y = 2.0 + 0.1 * head + 0.05 * np.sin(2 * np.pi * t / 365) + rng.normal(0, 0.01, t.size)
    for degree, seasonal in ((3, True), (4, False)):
        fit = fit_hst(t, head, y, degree, base_day=float(t[0]), seasonal=seasonal)
        for day, h in ((19100.5, 9.2), (19850.25, 12.7)):
            design = hst_design_matrix([day], [h], fit.base_day, degree, seasonal,
                                       fit.head_centre)
            predicted = float((design @ np.asarray(fit.coefficients))[0])
            assert fit.predict_one(day, h) == pytest.approx(predicted, rel=1e-12, abs=1e-12)
            verdict = hst_residual_verdict(fit, day, h, predicted + 2.5 * fit.s)
            assert verdict.level == "warning"
            assert verdict.residual == pytest.approx(2.5 * fit.s, rel=1e-9)
