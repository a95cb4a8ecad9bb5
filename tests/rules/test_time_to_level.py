"""Time-to-level rule: hours to each characteristic level at the least-squares rise rate,
alarms within a time (inclusive), held when the rate means nothing, cleared after a peak."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from rules.base import Context, Stale, Verdict
from rules.engine import Evaluation, RuleEngine
from rules.time_to_level import TimeToLevelConfig, TimeToLevelRule
from tests.rules.sample_site import MIN, T0, reading, settings
from vocab.model import AlarmTransition, Reading

LEVEL = "level-1/water_level"
CREST = "forecast/hours_to_crest"
# Sample site: flood_limit 123.5, design_flood 124.8, crest 126.0 m.
RULE: dict[str, Any] = {
    "id": "forecast", "type": "time_to_level", "point": LEVEL, "window": "1h",
    "targets": [{"level": "flood_limit"}, {"level": "design_flood"},
                {"level": "crest", "alarms": [{"severity": "warning", "within": "6h"},
                                              {"severity": "critical", "within": "3h"}]}]}


def engine(**extra: Any) -> RuleEngine:
    return RuleEngine(settings([{**RULE, **extra}]).rule_site())


def forecasts(out: Evaluation) -> dict[str, Reading]:
    return {r.point: r for r in out.readings if r.device == "forecast"}


def rising(k: int) -> float:
    """124.0 m rising 0.025 m every 5 min (0.3 m/h)."""
    return round(124.0 + 0.025 * k, 6)


def test_hours_to_each_level_by_hand() -> None:
    e = engine()
    outs = [e.evaluate([reading(LEVEL, T0 + k * 5 * MIN, rising(k))]) for k in range(13)]
    last = forecasts(outs[-1])
    # At 60 min the level is 124.3 m and rises 0.3 m/h (13 readings in [0, 60] min, all
    # on the line): crest in (126.0 − 124.3)/0.3 = 5.6667 h, design flood in
    # (124.8 − 124.3)/0.3 = 1.6667 h; the flood limit is behind it: 0.
    assert last["hours_to_crest"].value == pytest.approx(1.7 / 0.3, abs=1e-6)
    assert last["hours_to_design_flood"].value == pytest.approx(0.5 / 0.3, abs=1e-6)
    assert (last["hours_to_flood_limit"].value, last["hours_to_flood_limit"].quality) == (
        0.0, "good")
    assert last["hours_to_crest"].unit == "h"
    # The first readings cannot give a rate: fewer than 6 in the window.
    first = forecasts(outs[0])["hours_to_crest"]
    assert (first.value, first.quality) == (None, "bad")
    assert first.reason == "insufficient_history: 1 readings in the window"


def test_the_crest_forecast_exactly_at_the_horizon_raises() -> None:
    e = engine()
    transitions: list[AlarmTransition] = []
    hours: dict[int, float | None] = {}
    for k in range(45):
        out = e.evaluate([reading(LEVEL, T0 + k * 5 * MIN, rising(k))])
        hours[k] = forecasts(out)["hours_to_crest"].value
        transitions += [t for t in out.transitions if t.rule == "forecast"]
    # At k = 8 the level is 124.2 m: (126.0 − 124.2)/0.3 = 6 h exactly, "within 6 h".
    # At k = 44, 125.1 m: (126.0 − 125.1)/0.3 = 3 h exactly, "within 3 h"; at k = 43,
    # 125.075 m, it was 3.0833 h.
    window = np.array([(k - 44 + i) * 5 / 60 for i in range(13)])
    slope = np.polyfit(window, np.array([rising(44 - 12 + i) for i in range(13)]), 1)[0]
    assert slope == pytest.approx(0.3)
    assert hours[44] == 3.0 and hours[8] == 6.0
    assert hours[43] == pytest.approx(0.925 / 0.3, abs=1e-6)
    assert [(t.state, t.severity, t.ts_ms) for t in transitions] == [
        ("raised", "warning", T0 + 8 * 5 * MIN), ("escalated", "critical", T0 + 44 * 5 * MIN)]
    assert transitions[1].limit == 3.0
    assert "time to reach the level 3 h at or below limit 3 h" in transitions[1].message


def test_a_rate_turning_from_rising_to_falling_clears_the_alarm() -> None:
    e = engine()
    transitions: list[AlarmTransition] = []
    # Up 0.3 m/h to 125.1 m (critical: crest in 3 h), then down 0.3 m/h for two hours.
    series = [rising(k) for k in range(45)] + [round(125.1 - 0.025 * k, 6) for k in range(1, 25)]
    out = None
    for k, level in enumerate(series):
        out = e.evaluate([reading(LEVEL, T0 + k * 5 * MIN, level)])
        transitions += [t for t in out.transitions if t.rule == "forecast"]
    assert out is not None
    crest = forecasts(out)["hours_to_crest"]
    assert (crest.value, crest.quality, crest.reason) == (None, "bad", "not_rising: -0.300 m/h")
    states = [(t.state, t.severity) for t in transitions]
    assert states[:2] == [("raised", "warning"), ("escalated", "critical")]
    assert states[-1][0] == "cleared"
    assert e.book.active == {}


def test_not_rising_clears_at_once_where_a_held_forecast_would_not() -> None:
    config = TimeToLevelConfig.model_validate(RULE)
    rule = TimeToLevelRule(config, RuleEngine(settings([RULE]).rule_site()).env)
    (raised,) = rule.judge(Reading("forecast", "hours_to_crest", T0, 2.0, "h", "good"),
                           Context(T0))
    assert isinstance(raised, Verdict) and raised.severity == "critical"
    held = rule.judge(Reading("forecast", "hours_to_crest", T0 + 1, None, "h", "bad", None,
                              "insufficient_history: 2 readings in the window"), Context(T0))
    assert held == [Stale("insufficient_history: 2 readings in the window", CREST)]
    (cleared,) = rule.judge(Reading("forecast", "hours_to_crest", T0 + 2, None, "h", "bad",
                                    None, "not_rising: +0.004 m/h"), Context(T0))
    assert isinstance(cleared, Verdict) and cleared.severity is None


def test_a_silent_gauge_or_a_doubtful_reading_holds_the_forecast() -> None:
    e = engine()
    for k in range(13):
        e.evaluate([reading(LEVEL, T0 + k * 5 * MIN, rising(k))])
    # Silent for 30 min (max_gap: 3 poll intervals, 15 min): the next reading's rate
    # would span the gap.
    late = forecasts(e.evaluate([reading(LEVEL, T0 + 90 * MIN, 124.75)]))["hours_to_crest"]
    assert (late.value, late.quality) == (None, "bad")
    assert late.reason == "stale_gauge: no reading for 1800 s before this one"
    # A reading the quality rule found doubtful: no forecast from it.
    doubtful = e.evaluate([reading(LEVEL, T0 + 95 * MIN, 125.9, "suspect", "jump: +1.15")])
    crest = forecasts(doubtful)["hours_to_crest"]
    assert crest.reason == f"suspect_input: {LEVEL} jump: +1.15"
    # At or above a level is a fact of a good reading, whatever the rate: 0 h.
    over = forecasts(e.evaluate([reading(LEVEL, T0 + 100 * MIN, 126.01)]))["hours_to_crest"]
    assert (over.value, over.quality) == (0.0, "good")


def test_the_window_is_rebuilt_from_the_store_after_a_restart() -> None:
    stored = [reading(LEVEL, T0 + k * 5 * MIN, rising(k)) for k in range(12)]

    def history(point: str, from_ms: int, to_ms: int) -> list[Reading]:
        return [r for r in stored if from_ms <= r.ts_ms <= to_ms]

    e = RuleEngine(settings([RULE]).rule_site(), history=history)
    out = e.evaluate([reading(LEVEL, T0 + 60 * MIN, rising(12))])
    assert forecasts(out)["hours_to_crest"].value == pytest.approx(1.7 / 0.3, abs=1e-6)


def test_config_checks() -> None:
    with pytest.raises(ValueError, match="needs a 'name'"):
        TimeToLevelConfig.model_validate({**RULE, "targets": [{"level": 125.0}]})
    with pytest.raises(ValueError, match="distinct names"):
        TimeToLevelConfig.model_validate({**RULE, "targets": [
            {"level": "crest"}, {"level": 126.0, "name": "hours_to_crest"}]})
    with pytest.raises(ValueError, match="one per severity"):
        TimeToLevelConfig.model_validate({**RULE, "targets": [{"level": "crest", "alarms": [
            {"severity": "warning", "within": "6h"}, {"severity": "warning", "within": "3h"}]}]})
