"""HST rule: fitted from history, anomalies found, no false alarm, refits, configured model."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from rules.alarms import AlarmBook
from rules.base import Context, HistoryProvider, RuleEnv, Stale, Verdict
from rules.hst import HstConfig, HstRule
from rules.statistics import hst_predict, hst_term_names
from tests.rules.hst_site import FLOW, HOURS, LEVEL, NOISE, START, flow_law, level_at
from tests.rules.sample_site import DAY, HOUR, reading
from vocab.model import AlarmTransition, Reading

# The site's base date: the law's time effects count from 2022-01-01 00:00 Beijing time.
BASE_DATE = "2022-01-01"


class Site:
    """Three years of hourly level and seepage flow, the store's view of them."""

    def __init__(self) -> None:
        self.ts = START + np.arange(HOURS, dtype=np.int64) * HOUR
        t_days = self.ts / DAY
        self.level = level_at(t_days)
        # Uniform noise: its largest value is √3 σ = 1.73 S, so on clean data no residual
        # can pass 2S and "no false alarm" is a property of the test, not of a lucky seed.
        noise = np.random.default_rng(7).uniform(-NOISE, NOISE, HOURS)
        self.law = flow_law(t_days, self.level)
        self.flow = self.law + noise

    def history(self, point: str, from_ms: int, to_ms: int) -> list[Reading]:
        series = self.flow if point == FLOW else self.level
        unit = "L/s" if point == FLOW else "m"
        inside = (self.ts >= from_ms) & (self.ts <= to_ms)
        return [reading(point, int(t), float(v), unit=unit)
                for t, v in zip(self.ts[inside], series[inside], strict=True)]


def make(site: Site | None, **config: Any) -> HstRule:
    base = {"id": "seepage-hst", "type": "hst", "point": FLOW, "level": LEVEL,
            "head_reference": 110.0}
    env = RuleEnv({}, "Asia/Shanghai", {FLOW: 3600.0, LEVEL: 3600.0}, {FLOW: "L/s"},
                  site.history if site else None)
    if "fit" in config:
        config["fit"] = {"base_date": BASE_DATE, **config["fit"]}
    return HstRule(HstConfig.model_validate({**base, **config}), env)


def stream(rule: HstRule, ts: np.ndarray, level: np.ndarray, flow: np.ndarray
           ) -> tuple[list[AlarmTransition], list[Stale]]:
    book = AlarmBook()
    transitions: list[AlarmTransition] = []
    stale: list[Stale] = []
    latest: dict[str, Reading] = {}
    for t, lv, y in zip(ts, level, flow, strict=True):
        latest[LEVEL] = reading(LEVEL, int(t), float(lv))
        for judgement in rule.judge(reading(FLOW, int(t), float(y), unit="L/s"),
                                    Context(int(t), latest)):
            if isinstance(judgement, Stale):
                stale.append(judgement)
            else:
                transitions += book.update(rule.id, "piezo-1", "flow", judgement, int(t), "L/s")
    return transitions, stale


@pytest.fixture(scope="module")
def site() -> Site:
    return Site()


def test_fitted_from_two_years_finds_every_injected_anomaly_and_nothing_else(site: Site
                                                                              ) -> None:
    rule = make(site, fit={"history": "730d", "refit_every": "400d", "min_samples": 500})
    third = slice(2 * 365 * 24, HOURS)
    ts, level, flow = site.ts[third], site.level[third], site.flow[third].copy()
    law = site.law[third]
    s = NOISE / math.sqrt(3)
    # (first hour, hours, size in S): a sudden leak, a moderate rise, a drop (clogging),
    # and a two-hour blip that the 3-consecutive rule must let pass. Each anomalous
    # reading is the law plus size·S, so its residual is size·S up to the fit's error.
    anomalies = [(1000, 6, 6.0), (3000, 5, 2.5), (5000, 4, -6.0), (7000, 2, 6.0)]
    for first, hours, size in anomalies:
        flow[first:first + hours] = law[first:first + hours] + size * s
    transitions, stale = stream(rule, ts, level, flow)
    assert rule.model is not None and rule.model.s == pytest.approx(s, rel=0.05)
    assert stale == []
    raised = [(int((t.ts_ms - ts[0]) // HOUR), t.severity, t.side) for t in transitions
              if t.state == "raised"]
    # Raised at the third consecutive exceedance of each sustained anomaly.
    assert raised == [(1002, "alarm", "above"), (3002, "warning", "above"),
                      (5002, "alarm", "below")]
    cleared = [int((t.ts_ms - ts[0]) // HOUR) for t in transitions if t.state == "cleared"]
    assert cleared == [1006, 3005, 5004]
    assert len(transitions) == 6


def test_clean_data_raises_nothing(site: Site) -> None:
    rule = make(site, fit={"history": "730d", "min_samples": 500})
    third = slice(2 * 365 * 24, HOURS)
    transitions, _ = stream(rule, site.ts[third], site.level[third], site.flow[third])
    assert transitions == []


def test_refit_leaves_out_the_readings_the_rule_flagged() -> None:
    site = Site()
    year3 = 2 * 365 * 24
    anomaly = slice(year3 + 100, year3 + 110)
    site.flow[anomaly] += 10 * NOISE  # stored as measured: only the rule knows they are odd
    rule = make(site, fit={"history": "730d", "refit_every": "30d", "min_samples": 500})
    days40 = slice(year3, year3 + 40 * 24)
    stream(rule, site.ts[days40], site.level[days40], site.flow[days40])
    assert sorted(rule.flagged) == [int(t) for t in site.ts[anomaly]]
    # The scheduled refit at day 30 fitted 730 days of hourly bins less the ten flagged.
    assert rule.model is not None and rule.model.n == 730 * 24 + 1 - 10
    assert rule.next_fit_ms == int(site.ts[year3 + 30 * 24]) + 30 * DAY


def polluted(site: Site) -> HistoryProvider:
    def history(point: str, from_ms: int, to_ms: int) -> list[Reading]:
        rows = site.history(point, from_ms, to_ms)
        if point != FLOW:
            return rows
        # An offset of 17 S over the months before the last 30 days (a weir gauge
        # re-zeroed, then put back): a fit on them mispredicts the clean last month.
        return [reading(FLOW, r.ts_ms, (r.value or 0.0) + (
            0.1 if to_ms - 200 * DAY < r.ts_ms <= to_ms - 30 * DAY else 0.0), unit="L/s")
            for r in rows]
    return history


@pytest.mark.parametrize("dirty", [False, True])
def test_a_refit_replaces_the_model_unless_it_predicts_the_holdout_worse(site: Site,
                                                                          dirty: bool) -> None:
    ts0 = int(site.ts[2 * 365 * 24])
    previous = make(site, fit={"history": "730d", "min_samples": 500})
    previous._refit(ts0 - 30 * DAY)  # the last scheduled fit, a month ago
    assert previous.model is not None
    rule = make(site, fit={"history": "730d", "refit_every": "30d", "min_samples": 500})
    if dirty:
        rule.history = polluted(site)
    rule.model = previous.model
    rule._refit(ts0)
    assert (rule.model is previous.model) == dirty
    if not dirty:
        assert rule.model is not None and rule.model.n == 730 * 24 + 1  # holdout included
    assert rule.next_fit_ms == ts0 + 30 * DAY  # either way, the next try is a month on


def test_configured_coefficients_predict_like_the_fit_they_came_from(site: Site) -> None:
    fitted = make(site, fit={"history": "730d", "min_samples": 500})
    at = int(site.ts[2 * 365 * 24])
    fitted._refit(at)
    fit = fitted.model
    assert fit is not None
    # Express the fit in configuration: base_date must be a site-local midnight, so refit
    # with that base and copy the numbers as a design report would give them.
    base = dt.date(2022, 1, 1)
    base_day = START / DAY
    assert base_day == pytest.approx(dt.datetime(2022, 1, 1, tzinfo=ZoneInfo(
        "Asia/Shanghai")).timestamp() / 86400)
    from rules.statistics import fit_hst

    t = site.ts[: 2 * 365 * 24] / DAY
    refit = fit_hst(t, site.level[: 2 * 365 * 24] - 110.0, site.flow[: 2 * 365 * 24],
                    base_day=base_day)
    names = hst_term_names()
    configured = make(None, model={
        "base_date": base, "head_centre": refit.head_centre, "s": refit.s,
        "coefficients": dict(zip(names, map(float, refit.coefficients), strict=True))})
    assert configured.model is not None
    probe_t, probe_level = np.array([at / DAY]), np.array([6.0])
    assert hst_predict(configured.model, probe_t, probe_level)[0] == pytest.approx(
        hst_predict(refit, probe_t, probe_level)[0], abs=1e-9)


def test_without_a_model_or_with_a_stale_level_the_rule_holds() -> None:
    rule = make(None, fit={"history": "730d"})
    t = START
    assert rule.judge(reading(FLOW, t, 3.0, unit="L/s"), Context(t)) == [
        Stale("no_model: no coefficients and no history provider")]
    configured = make(None, model={"base_date": dt.date(2022, 1, 1), "head_centre": 5.0,
                                   "s": 0.01, "coefficients": dict.fromkeys(hst_term_names(),
                                                                             0.0)})
    old_level = {LEVEL: reading(LEVEL, t - 4 * HOUR, 115.0)}
    (held,) = configured.judge(reading(FLOW, t, 3.0, unit="L/s"), Context(t, old_level))
    assert held == Stale("stale_input: level-1/water_level is 14400 s old")
    fresh = {LEVEL: reading(LEVEL, t, 115.0)}
    (verdict,) = configured.judge(reading(FLOW, t, 0.0, unit="L/s"), Context(t, fresh))
    assert isinstance(verdict, Verdict) and verdict.severity is None


def test_config_needs_a_model_or_a_fit_and_the_right_terms() -> None:
    base = {"id": "h", "type": "hst", "point": FLOW, "level": LEVEL}
    with pytest.raises(ValueError, match="needs 'model'"):
        HstConfig.model_validate(base)
    with pytest.raises(ValueError, match="must name exactly a0, a1, a2, a3, b11"):
        HstConfig.model_validate({**base, "model": {
            "base_date": "2022-01-01", "s": 0.1, "coefficients": {"a0": 1.0}}})


def test_refit_history_is_read_page_by_page_over_the_whole_window() -> None:
    # A provider that, like HistoryReader, returns only the oldest readings of a range:
    # two years of hourly readings in pages of 1,000 must all reach the bins.
    from rules.hst import history_bin_means

    hour = 3_600_000
    stored = [Reading("piezo-1", "head", i * hour, float(i % 7), "m", "good")
              for i in range(17_520)]
    calls: list[int] = []

    def provider(point: str, from_ms: int, to_ms: int) -> list[Reading]:
        calls.append(from_ms)
        return [r for r in stored if from_ms <= r.ts_ms <= to_ms][:1000]

    bins = history_bin_means(provider, "piezo-1/head", 0, 17_520 * hour, 24 * hour)
    assert len(bins) == 730
    assert bins[729] == sum(float(i % 7) for i in range(729 * 24, 730 * 24)) / 24
    assert len(calls) == 19  # 18 pages and the empty one that ends the walk


def creep(model: Any) -> tuple[float, float]:
    """(c1, c2), the last two coefficients: θ and ln(1 + θ)."""
    c1, c2 = model.coefficients[-2:]
    return c1, c2


def test_a_refit_a_year_later_gives_the_same_creep_coefficients() -> None:
    # The law's creep is 0.002·θ + 0.05·ln(1 + θ), θ counted from 2022-01-01 (the base
    # date). Without noise, a fit on years 1–2 and a refit on years 2–3 must both find
    # those coefficients, because both count θ from the same base date. (Not to the last
    # digit: each hourly reading stands for its bin at the bin's middle, half an hour on.)
    clean = Site()
    clean.flow = clean.law.copy()
    year = 365 * DAY
    fits = []
    for years in (2, 3):
        rule = make(clean, fit={"history": "730d", "min_samples": 500})
        rule._refit(START + years * year)
        assert rule.model is not None and rule.model.base_day == START / DAY
        fits.append(rule.model)
    for fit in fits:
        assert creep(fit) == pytest.approx((0.002, 0.05), rel=1e-3)
    # Taking each window's oldest reading as t = 0, as fit_hst did, the refit's creep
    # terms mean something else: its "coefficients" are not comparable at all.
    from rules.statistics import fit_hst

    late = slice(365 * 24, 3 * 365 * 24)
    t = clean.ts[late] / DAY
    moved = fit_hst(t, clean.level[late] - 110.0, clean.flow[late], base_day=float(t[0]))
    assert abs(creep(moved)[1] - 0.05) > 0.01


def test_with_noise_the_creep_coefficients_of_a_refit_stay_put(site: Site) -> None:
    # Uniform noise of ±0.01 L/s: θ and ln(1 + θ) are nearly collinear over a late window,
    # so each coefficient moves a little, yet stays within 15 % of the law's; the creep
    # they add over the refit's year agrees to 1 % of the flow's creep.
    year = 365 * DAY
    fits = []
    for years in (2, 3):
        rule = make(site, fit={"history": "730d", "min_samples": 500})
        rule._refit(START + years * year)
        assert rule.model is not None
        fits.append(rule.model)
    for fit in fits:
        assert creep(fit) == pytest.approx((0.002, 0.05), rel=0.15)

    def added(fit: Any) -> float:  # creep over the third year, θ = 7.3 → 10.95
        c1, c2 = creep(fit)
        return c1 * (10.95 - 7.3) + c2 * (math.log1p(10.95) - math.log1p(7.3))

    truth = 0.002 * 3.65 + 0.05 * (math.log1p(10.95) - math.log1p(7.3))
    assert added(fits[0]) == pytest.approx(truth, rel=0.05)
    assert added(fits[1]) == pytest.approx(truth, rel=0.05)


def test_fit_bins_are_site_local_days_and_start_no_earlier_than_the_base_date() -> None:
    from rules.hst import FitPlan, bin_centre_days, fit_from_bins, history_bin_means

    rule = make(None, fit={"history": "730d", "bin": "1d"})
    assert rule.plan is not None and rule.plan.offset_ms == 8 * HOUR
    # 23:30 and 00:30 Beijing time are one UTC day (15:30, 16:30) but two local days.
    evening = START + 365 * DAY - 30 * 60_000
    stored = [reading(FLOW, evening, 1.0, unit="L/s"),
              reading(FLOW, evening + HOUR, 3.0, unit="L/s")]

    def provider(point: str, from_ms: int, to_ms: int) -> list[Reading]:
        return [r for r in stored if from_ms <= r.ts_ms <= to_ms]

    utc = history_bin_means(provider, FLOW, 0, evening + DAY, DAY)
    local = history_bin_means(provider, FLOW, 0, evening + DAY, DAY, 8 * HOUR)
    assert list(utc.values()) == [2.0]
    assert list(local.values()) == [1.0, 3.0]
    # A bin's time is its local noon: the base date's own bin is at t = 0.5 day.
    first = (START + 8 * HOUR) // DAY
    assert bin_centre_days([first], DAY, 8 * HOUR)[0] == pytest.approx(START / DAY + 0.5)
    # Bins before the base date are left out of the fit: with 30 of the 60 days before
    # it, 30 remain, too few for min_samples 40.
    plan = FitPlan(START / DAY, DAY, 8 * HOUR, 110.0, 3, False, 40, 10 * DAY)
    bins = {first + d: 1.0 + 0.01 * d for d in range(-30, 30)}
    levels = {b: 115.0 + math.sin(b) for b in bins}
    assert fit_from_bins(bins, levels, plan, now_ms=START + 30 * DAY, excluded_bins=set(),
                         old=None) == (None, "too_few")
    fitted, outcome = fit_from_bins({b: v for b, v in bins.items()}, levels,
                                    FitPlan(START / DAY - 30, DAY, 8 * HOUR, 110.0, 3, False,
                                            40, 10 * DAY),
                                    now_ms=START + 30 * DAY, excluded_bins=set(), old=None)
    assert outcome == "fitted" and fitted is not None and fitted.n == 60


def test_a_reading_before_the_base_date_is_not_judged() -> None:
    configured = make(None, model={"base_date": dt.date(2022, 1, 1), "s": 0.01,
                                   "coefficients": dict.fromkeys(hst_term_names(), 0.0)})
    t = START - HOUR
    level = {LEVEL: reading(LEVEL, t, 115.0)}
    assert configured.judge(reading(FLOW, t, 3.0, unit="L/s"), Context(t, level)) == [
        Stale("before_base_date: time effects start at the model's base date")]


def test_a_fitted_model_needs_a_base_date_that_agrees_with_the_configured_one() -> None:
    base = {"id": "h", "type": "hst", "point": FLOW, "level": LEVEL}
    with pytest.raises(ValueError, match="base_date"):
        HstConfig.model_validate({**base, "fit": {"history": "730d"}})
    model = {"base_date": "2022-01-01", "s": 0.1,
             "coefficients": dict.fromkeys(hst_term_names(), 0.0)}
    with pytest.raises(ValueError, match=r"model\.base_date 2022-01-01 and fit\.base_date "
                                         r"2021-06-01 differ"):
        HstConfig.model_validate({**base, "model": model,
                                  "fit": {"base_date": "2021-06-01"}})
