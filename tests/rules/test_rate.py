"""Rate rule: endpoint vs least-squares rates on hand-made series, units, window edges."""

from __future__ import annotations

import numpy as np
import pytest

from rules.base import Context, RuleEnv, Stale, Verdict
from rules.rate import RateConfig, RateRule, build, least_squares_slope, rate_factor
from tests.rules.sample_site import HOUR, MIN, T0, reading

LEVEL = "level-1/water_level"
ENV = RuleEnv({"flood_limit": 123.5}, "Asia/Shanghai", {LEVEL: 300.0}, {LEVEL: "m"})


def make(method: str, window: str = "1h", per: str = "m/h",
         high: float | None = 0.5, low: float | None = None, **extra: object) -> RateRule:
    config = RateConfig.model_validate({
        "id": "rise", "type": "rate", "point": LEVEL, "method": method, "window": window,
        "per": per,
        "high": [] if high is None else [{"severity": "warning", "value": high}],
        "low": [] if low is None else [{"severity": "warning", "value": low}], **extra})
    return build(config, ENV)


def feed(rule: RateRule, series: list[tuple[int, float]]) -> list[Verdict | Stale]:
    out = []
    for ts, value in series:
        (judgement,) = rule.judge(reading(LEVEL, ts, value), Context(ts))
        out.append(judgement)
    return out


def steady_rise(per_5min: float, minutes: int) -> list[tuple[int, float]]:
    return [(T0 + m * MIN, round(120.0 + per_5min * m / 5, 6)) for m in range(0, minutes + 1, 5)]


@pytest.mark.parametrize("method", ["endpoint", "least_squares"])
def test_steady_rise_of_5_cm_per_5_min_is_0_6_m_per_h(method: str) -> None:
    last = feed(make(method), steady_rise(0.05, 60))[-1]
    assert isinstance(last, Verdict)
    assert last.value == pytest.approx(0.6)
    assert (last.severity, last.limit, last.unit, last.direction) == ("warning", 0.5, "m/h",
                                                                       "above")


def test_endpoint_needs_a_reading_a_full_window_back() -> None:
    results = feed(make("endpoint"), steady_rise(0.05, 60))
    # 0 … 55 min: no reading at or before t − 1 h; at 60 min the 0-min reading is it.
    assert all(isinstance(r, Stale) for r in results[:12])
    assert results[11] == Stale("insufficient_history: no reading a full window back")
    assert isinstance(results[12], Verdict)


def test_endpoint_divides_by_the_actual_span_across_a_gap() -> None:
    # Readings at 0, 10 and 70 min: at 70 the reference is the 10-min reading (the latest
    # at or before 70 − 60), so the rate is (120.9 − 120.1) m over 60 min.
    results = feed(make("endpoint", high=None, low=-5.0),
                   [(T0, 120.0), (T0 + 10 * MIN, 120.1), (T0 + 70 * MIN, 120.9)])
    last = results[-1]
    assert isinstance(last, Verdict) and last.value == pytest.approx(0.8)


def test_endpoint_refuses_a_reference_far_older_than_the_window() -> None:
    results = feed(make("endpoint"), [(T0, 120.0), (T0 + 2 * HOUR, 121.0)])
    assert results[-1] == Stale("insufficient_history: gap at the start of the window")


def test_least_squares_window_is_closed_like_the_endpoint() -> None:
    # Readings every 10 min; at t = 60 min the reading at exactly t − 1 h is inside
    # [t − W, t], as it is the endpoint's reference. The 10 … 60-min readings lie on the
    # line 120.0 + 0.6 m/h·t and the 0-min one is δ = 0.4 m above it, so the slope through
    # all seven is 0.6 + δ·(0 − 0.5)/Σ(tᵢ − 0.5)² = 0.6 − 0.2/(28/36) = 12/35 m/h.
    series = [(T0, 120.4), *[(T0 + m * MIN, 120.0 + 0.01 * m) for m in range(10, 61, 10)]]
    hours = np.array([(t - T0) / HOUR for t, _ in series])
    assert np.polyfit(hours, np.array([v for _, v in series]), 1)[0] == pytest.approx(12 / 35)
    last = feed(make("least_squares", high=None, low=-5.0), series)[-1]
    assert isinstance(last, Verdict) and last.value == pytest.approx(12 / 35)
    endpoint = feed(make("endpoint", high=None, low=-5.0), series)[-1]
    assert isinstance(endpoint, Verdict)
    assert endpoint.value == pytest.approx(120.6 - 120.4)  # from the same 0-min reading


@pytest.mark.parametrize("method", ["endpoint", "least_squares"])
def test_at_a_change_of_slope_both_methods_start_at_t_minus_w(method: str) -> None:
    # Flat at 120.0 m until 13:00 (T0 + 1 h), then rising 0.6 m/h; readings every 15 min,
    # W = 1 h. At 14:00 the window [13:00, 14:00] starts at the bend: both methods give
    # exactly 0.6 m/h.
    bend = T0 + HOUR
    series = [(T0 + m * MIN, 120.0) for m in range(0, 60, 15)]
    series += [(bend + m * MIN, round(120.0 + 0.01 * m, 6)) for m in range(0, 61, 15)]
    results = feed(make(method, high=None, low=-5.0), series)
    at_14 = results[-1]
    assert isinstance(at_14, Verdict) and at_14.value == pytest.approx(0.6)
    # At 13:45 the window [12:45, 13:45] holds 12:45 (flat) … 13:45 (0.45 m up).
    at_1345 = results[-2]
    assert isinstance(at_1345, Verdict)
    hours = np.array([-0.25, 0.0, 0.25, 0.5, 0.75])
    levels = np.array([120.0, 120.0, 120.15, 120.3, 120.45])
    if method == "endpoint":
        expected = (120.45 - 120.0) / 1.0
    else:
        # Through all five readings, 12:45 included: t̄ = 0.25 h, L̄ = 120.18 m,
        # Σ(t − t̄)² = 0.625, Σ(t − t̄)(L − L̄) = 0.3, slope 0.48 m/h. The half-open
        # window would drop 12:45 and fit the last four only: 0.6 m/h, the rise
        # without the flat quarter-hour the window starts with.
        expected = 0.3 / 0.625
        assert np.polyfit(hours, levels, 1)[0] == pytest.approx(expected)
        assert np.polyfit(hours[1:], levels[1:], 1)[0] == pytest.approx(0.6)
    assert at_1345.value == pytest.approx(expected)


def test_an_error_on_the_last_reading_moves_the_slope_less_than_the_endpoint() -> None:
    # 0.6 m/h, with the 60-min reading 5 cm too high. The endpoint rate takes the whole
    # error: 0.65 m/h. The slope through the 13 readings in [0, 60] min moves by
    # δ·(t_n − mean t)/Σ(t_i − mean t)² = 0.05 × (0.5 h) / (182/144 h²) = 9/455 = 0.0198 m/h.
    series = steady_rise(0.05, 60)
    series[-1] = (series[-1][0], series[-1][1] + 0.05)
    endpoint = feed(make("endpoint", high=None, low=-5.0), series)[-1]
    slope = feed(make("least_squares", high=None, low=-5.0), series)[-1]
    assert isinstance(endpoint, Verdict) and isinstance(slope, Verdict)
    assert endpoint.value == pytest.approx(0.65)
    assert slope.value == pytest.approx(0.6 + 9 / 455)


def test_least_squares_needs_half_the_window_covered() -> None:
    results = feed(make("least_squares"), steady_rise(0.05, 30))
    assert results[5] == Stale("insufficient_history: readings cover less than half the window")
    assert isinstance(results[6], Verdict)  # 0 … 30 min: exactly half


def test_rapid_drawdown_trips_a_falling_limit() -> None:
    falling = [(T0 + m * MIN, round(120.0 - 0.06 * m / 5, 6)) for m in range(0, 61, 5)]
    last = feed(make("least_squares", high=None, low=-0.5), falling)[-1]
    assert isinstance(last, Verdict)
    assert (last.severity, last.direction) == ("warning", "below")
    assert last.value == pytest.approx(-0.72)


def test_settlement_in_mm_per_day_from_a_point_in_m() -> None:
    # 2 mm over a day of 5-min readings (in m) is 2 mm/day.
    series = [(T0 + i * 5 * MIN, 0.002 * i / 288) for i in range(289)]
    rule = make("least_squares", window="1d", per="mm/day", high=1.5)
    last = feed(rule, series)[-1]
    assert isinstance(last, Verdict)
    assert last.value == pytest.approx(2.0)
    assert last.severity == "warning" and last.unit == "mm/day"


def test_rate_units() -> None:
    assert rate_factor("m/h", "m") == 3600
    assert rate_factor("mm/day", "m") == pytest.approx(1000 * 86400)
    assert rate_factor("cm/h", "mm") == pytest.approx(0.1 * 3600)
    assert rate_factor("L/s/h", "L/s") == 3600  # a seepage flow's rate
    with pytest.raises(ValueError, match="must be <unit>/<time>"):
        rate_factor("mh", "m")
    with pytest.raises(ValueError, match="does not fit the point's unit 'kPa'"):
        rate_factor("m/h", "kPa")
    with pytest.raises(ValueError, match="time must be one of"):
        rate_factor("m/week", "m")


def test_slope_is_exact_on_a_line_far_from_the_epoch() -> None:
    ts = [T0 + i * 300_000 for i in range(100)]
    assert least_squares_slope(ts, [5.0 + 0.001 * i for i in range(100)]) == pytest.approx(
        0.001 / 300, rel=1e-9)


def test_a_suspect_reading_is_not_used_and_holds_the_rule() -> None:
    rule = make("least_squares")
    feed(rule, steady_rise(0.05, 55))
    held = rule.judge(reading(LEVEL, T0 + HOUR, 150.0, "suspect", "jump: +29.5"),
                      Context(T0 + HOUR))
    assert held == [Stale("suspect_input: level-1/water_level jump: +29.5")]
    last = feed(rule, [(T0 + HOUR + 5 * MIN, 120.65)])[-1]
    assert isinstance(last, Verdict) and last.value == pytest.approx(0.6)
