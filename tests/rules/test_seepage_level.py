"""Seepage versus level: the piezometric level expected at the reservoir level of ``lag``
ago from the station's own daily means, and the excess in standard errors of prediction,
checked against numpy's line fit."""

from __future__ import annotations

import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from rules.engine import Evaluation, RuleEngine
from rules.seepage_level import SeepageLevelConfig, SeepageLevelRule
from tests.rules.sample_site import DAY, HOUR, T0, reading, settings
from vocab.model import Reading

PIEZO, LEVEL = "piezo-1/head", "level-1/water_level"
MIDNIGHT = T0 - 8 * HOUR  # 2024-07-01 00:00 Beijing time: daily bins start here
RULE: dict[str, Any] = {
    "id": "p1-sl", "type": "seepage_level", "point": PIEZO, "level": LEVEL, "lag": "3d",
    "history": "60d", "min_samples": 30,
    "high": [{"severity": "warning", "value": 2.0}, {"severity": "alarm", "value": 3.0}]}


def pool(day: int) -> float:
    return 115.0 + 3.0 * math.sin(2 * math.pi * day / 17)


def piezometer(day: int) -> float:
    """Follows the pool of three days before, with a bounded scatter of ±0.05 m."""
    return 100.0 + 0.5 * pool(day - 3) + 0.05 * math.sin(1.7 * day)


def run(e: RuleEngine, days: range) -> list[Evaluation]:
    return [e.evaluate([reading(LEVEL, MIDNIGHT + d * DAY + h * HOUR, pool(d)),
                        reading(PIEZO, MIDNIGHT + d * DAY + h * HOUR, piezometer(d))])
            for d in days for h in range(24)]


def by_hand(day: int) -> tuple[float, float]:
    """ĥ and SE at ``day`` from the 60 days before it, with numpy."""
    days = np.arange(day - 60, day)
    x = np.array([pool(d - 3) for d in days])
    y = np.array([piezometer(d) for d in days])
    slope, intercept = np.polyfit(x, y, 1)
    s = math.sqrt(float(np.sum((y - intercept - slope * x) ** 2)) / (x.size - 2))
    x0 = pool(day - 3)
    se = s * math.sqrt(1 + 1 / x.size + (x0 - x.mean()) ** 2 / np.sum((x - x.mean()) ** 2))
    return intercept + slope * x0, se


def outputs(out: Evaluation) -> dict[str, Reading]:
    return {r.point: r for r in out.readings if r.device == "p1-sl"}


def test_a_piezometer_four_standard_errors_above_its_expectation_alarms() -> None:
    e = RuleEngine(settings([RULE], interval_s=3600).rule_site())
    before = run(e, range(70))
    assert all(out.transitions == [] for out in before)
    expected, se = by_hand(70)
    assert 0.02 < se < 0.06  # the scatter of ±0.05 m, as a standard error
    t = MIDNIGHT + 70 * DAY
    out = e.evaluate([reading(LEVEL, t, pool(70)), reading(PIEZO, t, expected + 4 * se)])
    published = outputs(out)
    assert published["expected"].value == pytest.approx(expected, abs=1e-4)
    assert published["expected"].unit == "m"
    assert published["excess"].value == pytest.approx(4.0, abs=1e-3)
    assert [(t.state, t.severity, t.point, t.limit) for t in out.transitions] == [
        ("raised", "alarm", "excess", 3.0)]


def test_below_its_expectation_raises_nothing_and_normal_days_stay_quiet() -> None:
    e = RuleEngine(settings([RULE], interval_s=3600).rule_site())
    run(e, range(70))
    expected, se = by_hand(70)
    t = MIDNIGHT + 70 * DAY
    out = e.evaluate([reading(LEVEL, t, pool(70)), reading(PIEZO, t, expected - 4 * se)])
    assert outputs(out)["excess"].value == pytest.approx(-4.0, abs=1e-3)
    assert out.transitions == []


def test_before_enough_history_the_readings_say_why() -> None:
    e = RuleEngine(settings([RULE], interval_s=3600).rule_site())
    outs = run(e, range(33))
    # Day 32: pairs (h(b), L(b − 3)) exist for b = 3 … 31, 29 of the 30 needed.
    early = outputs(outs[-1])
    assert (early["excess"].quality, early["excess"].reason) == (
        "bad", "insufficient_history: 29 samples, need 30")
    assert [n.reason for n in outs[-1].notes] == ["insufficient_history: 29 samples, need 30"]
    # Day 33: 30 pairs.
    (first,) = run(e, range(33, 34))[:1]
    assert outputs(first)["excess"].quality == "good"


def test_an_exceeding_reading_stays_out_of_the_history() -> None:
    e = RuleEngine(settings([RULE], interval_s=3600).rule_site())
    run(e, range(70))
    rule = e.rules["p1-sl"]
    assert isinstance(rule, SeepageLevelRule)
    expected, se = by_hand(70)
    t = MIDNIGHT + 70 * DAY
    e.evaluate([reading(LEVEL, t, pool(70)), reading(PIEZO, t, expected + 4 * se)])
    e.evaluate([reading(LEVEL, t + HOUR, pool(70)), reading(PIEZO, t + HOUR, piezometer(70))])
    # Day 70's bin holds the normal reading only.
    assert rule.bins.mean(PIEZO, rule.bins.bin(t)) == pytest.approx(piezometer(70))


def test_the_lag_of_a_lag_correlation_rule_and_the_store_read_on_the_worker() -> None:
    lag_rule = {"id": "p1-lag", "type": "lag_correlation", "point": PIEZO, "level": LEVEL,
                "lag": "3d", "window": "30d", "low": [{"severity": "warning", "value": 0.5}]}
    first = RuleEngine(settings([RULE], interval_s=3600).rule_site())
    stored: list[Reading] = [r for out in run(first, range(70)) for r in out.readings]
    release = threading.Event()

    def history(point: str, from_ms: int, to_ms: int) -> list[Reading]:
        if point == PIEZO and threading.current_thread() is not threading.main_thread():
            release.wait(10)  # a slow store: the rule must not wait for it on the loop
        return [r for r in stored if r.key == point and from_ms <= r.ts_ms <= to_ms]

    config = {**RULE, "lag": None, "lag_rule": "p1-lag"}
    with ThreadPoolExecutor(max_workers=1) as worker:
        e = RuleEngine(settings([lag_rule, config], interval_s=3600).rule_site(),
                       history=history, worker=worker)
        t = MIDNIGHT + 70 * DAY
        expected, se = by_hand(70)
        out = e.evaluate([reading(LEVEL, t, pool(70)), reading(PIEZO, t, expected + 4 * se)])
        assert outputs(out)["excess"].reason == "loading: reading the stored history"
        release.set()
        rule = e.rules["p1-sl"]
        assert isinstance(rule, SeepageLevelRule) and rule.lag_bins == 3
        deadline = time.monotonic() + 10
        while rule.bins._seeding is not None and not rule.bins._seeding.done() \
                and time.monotonic() < deadline:
            time.sleep(0.01)
        out = e.evaluate([reading(LEVEL, t + HOUR, pool(70)),
                          reading(PIEZO, t + HOUR, expected + 4 * se)])
    assert outputs(out)["excess"].value == pytest.approx(4.0, abs=1e-3)


def test_config_needs_exactly_one_lag_and_numeric_limits() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        SeepageLevelConfig.model_validate({**RULE, "lag_rule": "p1-lag"})
    with pytest.raises(ValueError, match="exactly one"):
        SeepageLevelConfig.model_validate({**RULE, "lag": None})
    with pytest.raises(ValueError, match="not a whole number of samples"):
        SeepageLevelConfig.model_validate({**RULE, "lag": "36h"})
    with pytest.raises(ValueError, match="numbers of standard errors"):
        SeepageLevelConfig.model_validate({**RULE, "high": [{"severity": "warning",
                                                            "value": "crest"}]})
    with pytest.raises(ValueError, match="fewer than min_samples"):
        SeepageLevelConfig.model_validate({**RULE, "history": "20d"})
