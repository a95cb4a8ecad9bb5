"""Lag-correlation rule: r at the site's lag, its breakdown, undefined r, warm-up."""

from __future__ import annotations

import math
from typing import Any

import pytest

from rules.alarms import AlarmBook
from rules.base import Context, HistoryProvider, RuleEnv, Stale, Verdict
from rules.lag_correlation import LagCorrelationConfig, LagCorrelationRule
from tests.rules.sample_site import DAY, HOUR, T0, reading
from vocab.model import AlarmTransition, Reading

PIEZO, LEVEL = "piezo-1/head", "level-1/water_level"
# T0 is 08:00 Beijing time; bins are local days, so start the series at local midnight.
MIDNIGHT = T0 - 8 * HOUR


def make(history: HistoryProvider | None = None, **config: Any) -> LagCorrelationRule:
    base = {"id": "lag", "type": "lag_correlation", "point": PIEZO, "level": LEVEL,
            "lag": "10d", "window": "60d", "low": [{"severity": "warning", "value": 0.5}]}
    env = RuleEnv({}, "Asia/Shanghai", {PIEZO: 21600.0, LEVEL: 21600.0}, {}, history)
    return LagCorrelationRule(LagCorrelationConfig.model_validate({**base, **config}), env)


def level_on(day: float) -> float:
    # Two operating cycles of different lengths: the correlation is not a single sinusoid's.
    return 115.0 + 3.0 * math.sin(2 * math.pi * day / 47) + 1.0 * math.sin(2 * math.pi * day / 17)


def piezo_on(day: float, decoupled_from: float | None = None) -> float:
    if decoupled_from is not None and day >= decoupled_from:
        # The classic precursor: the piezometer rises on its own while the pool cycles.
        return piezo_on(decoupled_from) + 0.05 * (day - decoupled_from)
    return 100.0 + 0.4 * (level_on(day - 10) - 115.0)


def series(days: int, decoupled_from: float | None = None) -> list[Reading]:
    """Readings of both points every 6 h, in time order."""
    out = []
    for i in range(days * 4):
        day = i / 4
        ts = MIDNIGHT + i * 6 * HOUR
        out.append(reading(LEVEL, ts, level_on(day)))
        out.append(reading(PIEZO, ts, piezo_on(day, decoupled_from)))
    return out


def run(rule: LagCorrelationRule, readings: list[Reading]
        ) -> tuple[list[tuple[int, Verdict]], list[AlarmTransition], list[Stale]]:
    book = AlarmBook()
    verdicts: list[tuple[int, Verdict]] = []
    transitions: list[AlarmTransition] = []
    stale: list[Stale] = []
    for r in readings:
        for judgement in rule.judge(r, Context(r.ts_ms)):
            if isinstance(judgement, Stale):
                stale.append(judgement)
                continue
            day = (r.ts_ms - MIDNIGHT) // DAY
            verdicts.append((day, judgement))
            transitions += book.update("lag", "piezo-1", "head", judgement, r.ts_ms, "")
    return verdicts, transitions, stale


def test_a_piezometer_following_the_pool_10_days_later_has_r_1_at_that_lag() -> None:
    verdicts, transitions, stale = run(make(), series(120))
    # A pair needs the level 10 days before the piezometer day, so on day d the window
    # holds d − 10 pairs; 80 % of 60 (48) first on day 58, judged at its first reading.
    assert verdicts[0][0] == 58
    assert stale[0] == Stale("insufficient_history: 0 of 60 samples, need 48")
    assert all(v.value == pytest.approx(1.0) for _, v in verdicts)
    assert [day for day, _ in verdicts] == list(range(58, 120))  # once per completed day
    assert transitions == []


def test_a_piezometer_rising_on_its_own_breaks_the_correlation_and_warns() -> None:
    verdicts, transitions, _ = run(make(), series(200, decoupled_from=130))
    before = [v.value for day, v in verdicts if day <= 130]
    assert min(before) == pytest.approx(1.0)  # type: ignore[type-var]
    assert [(t.state, t.severity, t.side) for t in transitions] == [
        ("raised", "warning", "below")]
    # r decays as decoupled days fill the window: 0.99 on day 135, 0.69 on day 157, and
    # below 0.5 on day 179, seven weeks after the piezometer left the pool.
    assert (transitions[0].ts_ms - MIDNIGHT) // DAY == 179
    assert transitions[0].value == pytest.approx(0.4645, abs=1e-4)
    assert "correlation r = " in transitions[0].message


def test_a_constant_pool_makes_r_undefined_not_low() -> None:
    flat = []
    for i in range(100 * 4):
        ts = MIDNIGHT + i * 6 * HOUR
        flat += [reading(LEVEL, ts, 120.0), reading(PIEZO, ts, 100.0 + 0.001 * (i % 3))]
    verdicts, transitions, stale = run(make(), flat)
    assert verdicts == [] and transitions == []
    assert stale[-1] == Stale("undefined: level or piezometer constant over the window")


def test_gaps_are_left_out_until_coverage_falls_below_the_minimum() -> None:
    readings = [r for r in series(120)
                if not (r.key == PIEZO and 50 * DAY <= r.ts_ms - MIDNIGHT < 60 * DAY)]
    verdicts, _, stale = run(make(), readings)
    # Ten of sixty piezometer days missing: 50 pairs ≥ 48, r still computed (and 1).
    assert verdicts and all(v.value == pytest.approx(1.0) for _, v in verdicts)
    verdicts, _, stale = run(make(min_coverage=0.9), readings)
    assert any(s.reason.startswith("insufficient_history: 50 of 60") for s in stale)


def test_history_warms_the_rule_up_at_start() -> None:
    stored = series(80)

    def history(point: str, from_ms: int, to_ms: int) -> list[Reading]:
        return [r for r in stored if r.key == point and from_ms <= r.ts_ms <= to_ms]

    rule = make(history)
    now = MIDNIGHT + 80 * DAY
    (verdict,) = rule.judge(reading(PIEZO, now, piezo_on(80)), Context(now))
    assert isinstance(verdict, Verdict) and verdict.value == pytest.approx(1.0)


def test_lag_and_window_must_be_whole_samples() -> None:
    with pytest.raises(ValueError, match="lag must be a whole number of samples"):
        make(lag="36h")
