"""Dam-safety statistics: Pauta and MAD screening, the online screen, HST, lag correlation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rules.statistics import (
    OnlineGrossErrorScreen,
    fit_hst,
    hst_design_matrix,
    hst_predict,
    hst_residual_verdict,
    hst_term_names,
    lag_correlation,
    mad_scores,
    pauta_outliers,
    robust_outliers,
)

# --- batch Pauta -------------------------------------------------------------------------


def test_pauta_refuses_ten_values_it_cannot_judge() -> None:
    # Nine equal values and one wild one reach the bound exactly: max|x − x̄|/s =
    # (n − 1)/√n = 9/√10 = 2.846 < 3, however wild the tenth value is. "No outliers"
    # would be a verdict the test cannot give: it refuses, and says what to use.
    x = np.array([10.0] * 9 + [1000.0])
    z = np.abs(x - x.mean()).max() / x.std(ddof=1)
    assert z == pytest.approx(9 / math.sqrt(10))
    with pytest.raises(ValueError, match=r"cannot judge 10 values.*at least 11.*robust"):
        pauta_outliers(x)
    with pytest.raises(ValueError, match="cannot judge 0 values"):
        pauta_outliers([])


def test_pauta_flags_the_same_outlier_at_eleven_values() -> None:
    # n = 11: the bound is 10/√11 = 3.015 > 3, so the wild value is flagged.
    x = np.array([10.0] * 10 + [1000.0])
    assert np.abs(x - x.mean()).max() / x.std(ddof=1) == pytest.approx(10 / math.sqrt(11))
    assert pauta_outliers(x).tolist() == [False] * 10 + [True]


def test_pauta_iterates_so_a_large_error_cannot_mask_a_smaller_one() -> None:
    base = [10.0, 10.1, 9.9, 10.05, 9.95, 10.15, 9.85, 10.0, 10.1, 9.9]
    x = np.array(base * 2 + [30.0, 13.0])
    # One pass: x̄ ≈ 11.05 and s ≈ 4.3, so only 30 is beyond 3s.
    one_pass = np.abs(x - x.mean()) > 3 * x.std(ddof=1)
    assert np.flatnonzero(one_pass).tolist() == [20]
    # Without 30: x̄ ≈ 10.14, s ≈ 0.66, and 13 is beyond 3s ≈ 1.97.
    assert np.flatnonzero(pauta_outliers(x)).tolist() == [20, 21]


def test_pauta_uses_the_sample_standard_deviation() -> None:
    # Nine −1, nine +1, a 0 and 4.2 (n = 20): x̄ = 0.21, Σ(x − x̄)² = 35.64 − 20·0.21²
    # = 34.758, so s = √(34.758/19) = 1.3525 and 4.2 is 3.99/1.3525 = 2.95 s away: not
    # flagged. With the population form √(34.758/20) it would be 3.03 and flagged.
    x = np.array([-1.0, 1.0] * 9 + [0.0, 4.2])
    assert np.abs(x - x.mean()).max() / x.std(ddof=1) == pytest.approx(2.950, abs=1e-3)
    assert not pauta_outliers(x).any()
    assert pauta_outliers(x, sigma=2.9).tolist() == [False] * 19 + [True]


def test_pauta_on_clean_data_flags_nothing() -> None:
    x = np.array([10.0, 10.1, 9.9, 10.05, 9.95, 10.15, 9.85, 10.0, 10.1, 9.9] * 3)
    assert not pauta_outliers(x).any()
    assert not pauta_outliers(np.full(30, 5.0)).any()


def test_pauta_rejects_gaps() -> None:
    with pytest.raises(ValueError, match="NaN"):
        pauta_outliers([1.0] * 20 + [math.nan])


# --- MAD --------------------------------------------------------------------------------

TEN_WITH_OUTLIER = [10.0, 10.2, 9.8, 10.1, 9.9, 10.05, 9.95, 10.15, 9.85, 50.0]


def test_mad_scores_known_answer() -> None:
    # median = (10.0 + 10.05)/2 = 10.025; |x − median| sorted:
    # 0.025 0.025 0.075 0.075 0.125 0.125 0.175 0.175 0.225 39.975 → MAD = 0.125.
    scores = mad_scores(TEN_WITH_OUTLIER)
    assert scores[-1] == pytest.approx(0.6745 * 39.975 / 0.125)  # 215.7
    assert scores[1] == pytest.approx(0.6745 * 0.175 / 0.125)
    assert np.abs(scores[:-1]).max() == pytest.approx(0.6745 * 0.225 / 0.125)  # 1.214


def test_mad_fallback_flags_what_pauta_cannot_at_ten_values() -> None:
    with pytest.raises(ValueError, match="cannot judge 10"):
        pauta_outliers(TEN_WITH_OUTLIER)
    assert robust_outliers(TEN_WITH_OUTLIER).tolist() == [False] * 9 + [True]


def test_mad_zero_uses_mean_absolute_deviation() -> None:
    # Nine values on one step and one off it: MAD = 0. Mean AD = 0.5/10 = 0.05, so the
    # score is 0.5/(1.253314 · 0.05) = 7.98.
    x = [20.0] * 9 + [20.5]
    scores = mad_scores(x)
    assert scores[-1] == pytest.approx(0.5 / (math.sqrt(math.pi / 2) * 0.05))
    assert robust_outliers(x).tolist() == [False] * 9 + [True]
    # The floor keeps a single resolution step from being flagged.
    assert not robust_outliers(x, floor=0.5).any()
    assert not mad_scores([3.0] * 5).any()


def test_mad_of_empty_and_single_series() -> None:
    assert mad_scores([]).size == 0
    assert robust_outliers([]).size == 0
    assert mad_scores([7.0]).tolist() == [0.0]


# --- online screen ---------------------------------------------------------------------


def test_online_screen_methods_by_window_fill() -> None:
    screen = OnlineGrossErrorScreen(30, floor=0.02)
    readings = [100.00, 100.01] * 10
    methods = [screen.check(value).method for value in readings]
    # 0–2 good values: warm-up; 3–10: median/MAD; from 11: 3σ.
    assert methods[:3] == ["warmup"] * 3
    assert methods[3:11] == ["mad"] * 8
    assert set(methods[11:]) == {"pauta"}


def test_online_screen_floor_tolerates_resolution_steps_of_a_flat_sensor() -> None:
    screen = OnlineGrossErrorScreen(20, floor=0.02)
    for value in [100.00] * 20:
        screen.check(value)
    # s = 0: without the floor any step would be suspect.
    step = screen.check(100.01)
    assert not step.suspect
    assert step.method == "pauta"
    # The limit is max(3s, δ): 0.04 m off a window with s ≈ 0.002 is beyond δ = 0.02.
    assert screen.check(100.04).suspect


def test_online_screen_flags_a_spike_and_keeps_it_out_of_the_window() -> None:
    screen = OnlineGrossErrorScreen(20, floor=0.02)
    for value in [100.00, 100.01, 100.02, 100.01] * 5:
        screen.check(value)
    before = screen.good_values
    spike = screen.check(103.0)
    assert spike.suspect
    assert spike.method == "pauta"
    # The window mean is 100.01 and s = 0.00725; floor/σ = 0.00667 < s, so the score
    # is 2.99/0.00725 = 412.
    s = float(np.std(before, ddof=1))
    assert spike.score == pytest.approx(2.99 / s, rel=1e-9)
    assert screen.good_values == before
    assert not screen.check(100.01).suspect


def test_online_screen_excludes_the_value_itself() -> None:
    # With the value included, max z at n = 11 could not exceed 3.015; excluded, a wild
    # value scores far beyond it.
    screen = OnlineGrossErrorScreen(11, floor=0.001)
    for value in [1.0, 1.1, 0.9, 1.05, 0.95, 1.0, 1.1, 0.9, 1.05, 0.95, 1.0]:
        screen.check(value)
    verdict = screen.check(50.0)
    assert verdict.suspect
    assert verdict.score > 100


def test_online_screen_mad_fallback_catches_an_early_spike() -> None:
    screen = OnlineGrossErrorScreen(30, floor=0.02)
    for value in [100.00, 100.02, 99.99, 100.01, 100.00]:
        screen.check(value)
    verdict = screen.check(112.0)
    assert verdict.suspect
    assert verdict.method == "mad"
    # Window median 100.00, MAD 0.01 → scale 0.01/0.6745; score = 12/0.014826 = 809.4.
    assert verdict.score == pytest.approx(12.0 * 0.6745 / 0.01)


def test_online_screen_reseeds_after_a_persistent_step() -> None:
    screen = OnlineGrossErrorScreen(20, floor=0.02, reseed_after=5)
    for value in [100.00, 100.01] * 10:
        screen.check(value)
    step = [screen.check(105.0 + 0.01 * (i % 2)) for i in range(5)]
    assert all(verdict.suspect for verdict in step)
    # Five consistent suspects: the process moved, not the sensor broke.
    after = screen.check(105.01)
    assert not after.suspect
    assert after.method == "mad"
    assert screen.good_values == (105.0, 105.01, 105.0, 105.01, 105.0, 105.01)


def test_online_screen_without_reseeding_stays_suspect() -> None:
    screen = OnlineGrossErrorScreen(20, floor=0.02, reseed_after=None)
    for value in [100.00, 100.01] * 10:
        screen.check(value)
    assert all(screen.check(105.0).suspect for _ in range(50))


def test_online_screen_rejects_bad_configuration_and_values() -> None:
    with pytest.raises(ValueError, match="floor"):
        OnlineGrossErrorScreen(20, floor=0.0)
    with pytest.raises(ValueError, match="window"):
        OnlineGrossErrorScreen(5, floor=0.01)
    screen = OnlineGrossErrorScreen(20, floor=0.01)
    with pytest.raises(ValueError):
        screen.check(math.nan)


# --- HST ---------------------------------------------------------------------------------

BASE_DAY = 19723.0  # 2024-01-01 as days since the Unix epoch
SIGMA = 0.5  # mm of displacement noise
TRUE_COEFFICIENTS = {
    "a0": 5.0,
    "a1": 0.8,
    "a2": 0.05,
    "a3": -0.01,
    "b11": 1.2,
    "b21": -0.6,
    "b12": 0.3,
    "b22": 0.1,
    "c1": 0.15,
    "c2": 0.9,
}


def synthetic_hst(seed: int = 20240701) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Three years of daily readings from known HST coefficients; returns t, H, truth, noise.

    The noise is Gaussian truncated at ±2.5σ: with untruncated noise about 0.27 % of
    the clean readings (3 in 3 years) would be genuine 3S alarms and "no false alarm"
    would depend on the seed.
    """
    rng = np.random.default_rng(seed)
    t = BASE_DAY + np.arange(3 * 365, dtype=float)
    d = t - BASE_DAY
    # Annual drawdown plus a shorter cycle, so head is not collinear with the season.
    head = 20.0 + 2.5 * np.sin(2 * np.pi * d / 365 + 0.7) + 1.0 * np.sin(2 * np.pi * d / 97)
    h = head - 20.0
    theta = d / 100.0
    c = TRUE_COEFFICIENTS
    truth = (
        c["a0"]
        + c["a1"] * h
        + c["a2"] * h**2
        + c["a3"] * h**3
        + c["b11"] * np.sin(2 * np.pi * d / 365)
        + c["b21"] * np.cos(2 * np.pi * d / 365)
        + c["b12"] * np.sin(4 * np.pi * d / 365)
        + c["b22"] * np.cos(4 * np.pi * d / 365)
        + c["c1"] * theta
        + c["c2"] * np.log1p(theta)
    )
    z = rng.standard_normal(t.size)
    while np.any(np.abs(z) > 2.5):
        wide = np.abs(z) > 2.5
        z[wide] = rng.standard_normal(int(wide.sum()))
    return t, head, truth, SIGMA * z


ANOMALY_DAYS = np.array([150, 400, 620, 800, 1000])


def test_hst_detects_injected_anomalies_without_false_alarms() -> None:
    t, head, truth, noise = synthetic_hst()
    y = truth + noise
    # 5σ off the true value, alternating sign.
    y[ANOMALY_DAYS] = truth[ANOMALY_DAYS] + 5 * SIGMA * np.array([1, -1, 1, -1, 1])
    clean = np.ones(t.size, dtype=bool)
    clean[ANOMALY_DAYS] = False

    fit = fit_hst(t[clean], head[clean], y[clean], degree=3, base_day=BASE_DAY)
    assert (fit.n, fit.p, fit.rank) == (t.size - 5, 10, 10)
    # S estimates the noise: within 5 % of the noise actually added.
    assert fit.s == pytest.approx(float(np.std(noise[clean], ddof=1)), rel=0.05)
    assert 0.9 * SIGMA < fit.s < 1.05 * SIGMA
    # Predictions track the truth well inside the noise.
    assert np.max(np.abs(hst_predict(fit, t, head) - truth)) < 0.5 * SIGMA

    verdicts = [hst_residual_verdict(fit, t[i], head[i], y[i]) for i in range(t.size)]
    levels = np.array([verdict.level for verdict in verdicts])
    assert levels[ANOMALY_DAYS].tolist() == ["alarm"] * 5
    for day in ANOMALY_DAYS:
        assert abs(verdicts[day].residual) == pytest.approx(5 * SIGMA, abs=0.5 * SIGMA)
        assert verdicts[day].s == fit.s
    assert not np.any(levels[clean] == "alarm")
    # 2S warnings occur at the rate the noise implies: about 4 % for noise truncated at
    # 2.5σ; certainly under the 5 % of untruncated Gaussian noise plus margin.
    warning_rate = float(np.mean(levels[clean] == "warning"))
    assert 0.01 < warning_rate < 0.07


def test_hst_verdict_boundaries_are_strict() -> None:
    t, head, truth, noise = synthetic_hst()
    fit = fit_hst(t, head, truth + noise, base_day=BASE_DAY)
    day, h = float(t[500]), float(head[500])
    predicted = float(hst_predict(fit, [day], [h])[0])
    assert hst_residual_verdict(fit, day, h, predicted).level == "normal"
    assert hst_residual_verdict(fit, day, h, predicted + 1.99 * fit.s).level == "normal"
    assert hst_residual_verdict(fit, day, h, predicted - 2.01 * fit.s).level == "warning"
    assert hst_residual_verdict(fit, day, h, predicted + 2.99 * fit.s).level == "warning"
    assert hst_residual_verdict(fit, day, h, predicted + 3.01 * fit.s).level == "alarm"


def test_hst_predictions_do_not_depend_on_the_head_datum() -> None:
    # Heads given as elevations (~1020 m) instead of depths (~20 m): uncentred powers up
    # to H³ would be numerically hopeless; centring makes the fits identical.
    t, head, truth, noise = synthetic_hst()
    near = fit_hst(t, head, truth + noise, base_day=BASE_DAY)
    far = fit_hst(t, head + 1000.0, truth + noise, base_day=BASE_DAY)
    assert np.allclose(hst_predict(near, t, head), hst_predict(far, t, head + 1000.0), atol=1e-9)
    assert far.s == pytest.approx(near.s, rel=1e-9)


def test_hst_design_matrix_known_row() -> None:
    # t = base + 100 days: θ = 1, ln(1 + θ) = ln 2; head 22 m centred on 20 m: h = 2.
    row = hst_design_matrix([BASE_DAY + 100.0], [22.0], BASE_DAY, 3, True, head_centre=20.0)[0]
    angle = 2 * math.pi * 100 / 365
    expected = [
        1.0,
        2.0,
        4.0,
        8.0,
        math.sin(angle),
        math.cos(angle),
        math.sin(2 * angle),
        math.cos(2 * angle),
        1.0,
        math.log(2.0),
    ]
    assert row == pytest.approx(expected)
    assert len(hst_term_names(3)) == row.size
    assert hst_design_matrix([BASE_DAY], [20.0], BASE_DAY, 4, False).shape == (1, 7)
    assert hst_term_names(4, seasonal=False) == ("a0", "a1", "a2", "a3", "a4", "c1", "c2")


def test_hst_rejects_invalid_input() -> None:
    with pytest.raises(ValueError, match="degree"):
        hst_design_matrix([BASE_DAY], [20.0], BASE_DAY, degree=2)
    with pytest.raises(ValueError, match="ln"):
        hst_design_matrix([BASE_DAY - 100.0], [20.0], BASE_DAY)
    with pytest.raises(ValueError, match="more readings"):
        fit_hst(BASE_DAY + np.arange(10.0), np.full(10, 20.0), np.zeros(10),
                base_day=BASE_DAY)


def test_hst_degree_four_fits_a_quartic_head_response() -> None:
    t, head, truth, noise = synthetic_hst()
    h = head - head.mean()
    y = truth + 0.02 * h**4 + noise
    cubic = fit_hst(t, head, y, degree=3, base_day=BASE_DAY)
    quartic = fit_hst(t, head, y, degree=4, base_day=BASE_DAY)
    assert quartic.p == 11
    assert quartic.coefficients[4] == pytest.approx(0.02, abs=0.005)
    assert quartic.s < cubic.s


# --- lag correlation ------------------------------------------------------------------


def test_lag_correlation_recovers_a_seven_day_lag() -> None:
    rng = np.random.default_rng(7)
    days = 400
    # A smooth reservoir level: white noise through a 15-day moving average.
    level = 100.0 + np.convolve(rng.standard_normal(days + 14), np.ones(15) / 15, "valid")
    lag = 7
    piezo = np.empty(days)
    piezo[lag:] = 60.0 + 0.4 * level[:-lag]
    piezo[:lag] = 60.0 + 0.4 * level[0]
    piezo += 0.01 * rng.standard_normal(days)

    result = lag_correlation(level, piezo, max_lag=30)
    assert result.best_lag == 7
    assert result.r > 0.95
    assert result.r == result.r_by_lag[7]
    assert result.r_by_lag.shape == (31,)
    assert result.r_by_lag[0] < result.r


def test_lag_correlation_known_small_answer() -> None:
    level = [1.0, 2.0, 3.0, 2.0, 1.0, 2.0, 3.0, 2.0]
    # piezo(t) = level(t − 1) with the first value repeated.
    piezo = [1.0, 1.0, 2.0, 3.0, 2.0, 1.0, 2.0, 3.0]
    result = lag_correlation(level, piezo, max_lag=2)
    assert result.best_lag == 1
    assert result.r == pytest.approx(1.0)
    # Lag 1 pairs piezo[1:] with level[:-1]: identical sequences, r = 1.
    # Lag 0: level − 2 = (−1, 0, 1, 0, −1, 0, 1, 0); piezo − 1.875 = (−0.875, −0.875,
    # 0.125, 1.125, 0.125, −0.875, 0.125, 1.125). Σab = 0.875 + 0.125 − 0.125 + 0.125
    # = 1, Σa² = 4, Σb² = 3·0.765625 + 3·0.015625 + 2·1.265625 = 4.875.
    assert result.r_by_lag[0] == pytest.approx(1 / math.sqrt(4 * 4.875))


def test_lag_correlation_with_a_constant_level_is_undefined() -> None:
    result = lag_correlation(np.full(50, 100.0), np.linspace(0.0, 1.0, 50), max_lag=5)
    assert result.best_lag is None
    assert math.isnan(result.r)
    with pytest.raises(ValueError, match="pairs"):
        lag_correlation([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], max_lag=1)
