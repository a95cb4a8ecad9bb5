"""Derived points: the worked quantities of §2.2/§2.4 and quality propagation."""

from __future__ import annotations

from typing import Any

import pytest

from rules.base import Context, RuleEnv
from rules.derived import DerivedPoint, DerivedPointConfig, build
from rules.engine import RuleEngine
from tests.rules.sample_site import HOUR, MIN, T0, reading, settings
from vocab.model import Reading

LEVEL = "level-1/water_level"
H1, H2 = "piezo-1/head", "piezo-1/head2"
ENV = RuleEnv({"crest": 126.0, "flood_limit": 123.5}, "Asia/Shanghai",
              {LEVEL: 300.0, H1: 3600.0, H2: 3600.0}, {})


def derived(**config: Any) -> DerivedPoint:
    return build(DerivedPointConfig.model_validate(config), ENV)


def compute(point: DerivedPoint, latest: list[Reading], at: int = T0) -> Reading:
    return point.compute(Context(at, {r.key: r for r in latest}), at)


def test_freeboard_is_crest_minus_level() -> None:
    freeboard = derived(id="freeboard", expression="crest - {level-1/water_level}", unit="m")
    result = compute(freeboard, [reading(LEVEL, T0, 123.62)])
    # 126.0 − 123.62 is 2.3799999999999955 in binary; the reading carries 2.38.
    assert (result.key, result.value, result.unit, result.quality) == (
        "derived/freeboard", 2.38, "m", "good")


def test_hydraulic_gradient_and_safety_factor() -> None:
    # J = (H1 − H2)/L = (118.40 − 116.15)/12.5 = 0.18. With Gs = 2.65 and n = 0.40,
    # J_cr = (Gs − 1)(1 − n) = 0.99 and the safety factor J_cr/J = 5.5.
    gradient = derived(id="gradient_1_2", expression="({piezo-1/head} - {piezo-1/head2}) / L",
                       constants={"L": 12.5})
    heads = [reading(H1, T0, 118.40), reading(H2, T0, 116.15)]
    assert compute(gradient, heads).value == 0.18
    factor = derived(id="safety_factor",
                     expression="(Gs - 1) * (1 - n) / (({piezo-1/head} - {piezo-1/head2}) / L)",
                     constants={"Gs": 2.65, "n": 0.40, "L": 12.5})
    assert compute(factor, heads).value == 5.5


@pytest.mark.parametrize(("quality", "reason", "expected"), [
    ("suspect", "gross_error: 4.2 (pauta)",
     ("suspect", 2.38, "suspect_input: level-1/water_level gross_error: 4.2 (pauta)")),
    ("bad", "timeout", ("bad", None, "bad_input: level-1/water_level timeout")),
])
def test_input_quality_propagates_with_the_reason(quality: str, reason: str,
                                                  expected: tuple[str, float | None, str]
                                                  ) -> None:
    freeboard = derived(id="freeboard", expression="crest - {level-1/water_level}")
    result = compute(freeboard, [reading(LEVEL, T0, 123.62, quality, reason)])  # type: ignore[arg-type]
    assert (result.quality, result.value, result.reason) == expected


def test_missing_and_stale_inputs() -> None:
    gradient = derived(id="g", expression="({piezo-1/head} - {piezo-1/head2}) / 12.5")
    missing = compute(gradient, [reading(H1, T0, 118.4)])
    assert (missing.quality, missing.value, missing.reason) == (
        "bad", None, "missing_input: piezo-1/head2")
    # Hourly piezometers: older than 3 poll intervals is stale.
    stale = compute(gradient, [reading(H1, T0, 118.4), reading(H2, T0 - 3 * HOUR - 1000, 116.15)])
    assert (stale.quality, stale.value, stale.reason) == (
        "suspect", 0.18, "stale_input: piezo-1/head2 is 10801 s old")
    fresh = compute(gradient, [reading(H1, T0, 118.4), reading(H2, T0 - 3 * HOUR, 116.15)])
    assert fresh.quality == "good"


def test_configured_stale_after_overrides_the_poll_intervals() -> None:
    point = derived(id="g", expression="{piezo-1/head} - {piezo-1/head2}", stale_after="10min")
    result = compute(point, [reading(H1, T0, 1.0), reading(H2, T0 - 11 * MIN, 0.5)])
    assert result.quality == "suspect"


def test_evaluation_error_is_a_bad_reading_not_an_exception() -> None:
    gradient = derived(id="g", expression="({piezo-1/head} - {piezo-1/head2}) / L",
                       constants={"L": 0.0})
    result = compute(gradient, [reading(H1, T0, 118.4), reading(H2, T0, 116.15)])
    assert result.quality == "bad" and result.value is None
    # The column of the divisor 'L' in the expression.
    assert result.reason == "evaluation_error: division by zero (column 38)"


def test_expression_errors_are_config_errors_with_their_column() -> None:
    with pytest.raises(ValueError, match=r"comparisons are not allowed \(column \d+\)"):
        DerivedPointConfig.model_validate({"id": "x", "expression": "{a/b} > 1"})


def test_rules_use_derived_points_like_any_point_and_chains_resolve_in_order() -> None:
    s = settings(
        rules=[{"id": "gradient-high", "type": "threshold", "point": "derived/gradient",
                "high": [{"severity": "warning", "value": 0.16},
                         {"severity": "alarm", "value": 0.20}]},
               {"id": "fs-low", "type": "threshold", "point": "derived/safety_factor",
                "low": [{"severity": "warning", "value": 6.0}]}],
        # Declared before the point it reads: the engine orders by dependency.
        derived=[{"id": "safety_factor", "expression": "0.99 / {derived/gradient}"},
                 {"id": "gradient", "expression": "({piezo-1/head} - {piezo-1/head2}) / 12.5"}])
    engine = RuleEngine(s.rule_site())
    evaluation = engine.evaluate([reading(H1, T0, 118.40), reading(H2, T0, 116.15)])
    assert [(r.key, r.value) for r in evaluation.readings] == [
        (H1, 118.40), (H2, 116.15), ("derived/gradient", 0.18), ("derived/safety_factor", 5.5)]
    assert [(t.rule, t.point, t.state, t.severity) for t in evaluation.transitions] == [
        ("gradient-high", "gradient", "raised", "warning"),
        ("fs-low", "safety_factor", "raised", "warning")]


def test_derived_point_is_computed_only_when_an_input_changes() -> None:
    s = settings([], derived=[{"id": "freeboard", "expression": "crest - {level-1/water_level}"}])
    engine = RuleEngine(s.rule_site())
    assert len(engine.evaluate([reading(LEVEL, T0, 123.0)]).readings) == 2
    assert [r.key for r in engine.evaluate([reading(H1, T0, 118.4)]).readings] == [H1]
