"""config/example-site.yaml declares every analysis, and its rules run as configured."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from edge.config import load_config
from rules.engine import RuleEngine
from tests.rules.sample_site import MIN, T0, reading
from vocab.model import DRY

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "example-site.yaml"
LEVEL = "level-1/water_level"


@pytest.fixture(scope="module")
def engine() -> RuleEngine:
    return RuleEngine(load_config(EXAMPLE).settings.rule_site())


def test_the_example_declares_every_analysis() -> None:
    settings = load_config(EXAMPLE).settings
    types = Counter(rule.type for rule in settings.rules)
    assert set(types) == {"threshold", "rate", "accumulation", "quality", "hst",
                          "lag_correlation", "potential", "time_to_level", "seepage_level"}
    hst = next(rule for rule in settings.rules if rule.type == "hst")
    assert hst.fit is not None and str(hst.fit.base_date) == "2016-04-01"


def test_a_rising_pool_is_forecast_and_a_dry_piezometer_gives_no_gradient(
        engine: RuleEngine) -> None:
    out = None
    raised = set()
    for k in range(61):
        t = T0 + k * MIN
        # 0.6 m/h from 124.0 m: an hour later 124.6 m, the crest (126.0 m) 2⅓ h away.
        out = engine.evaluate([reading(LEVEL, t, round(124.0 + 0.01 * k, 6))])
        raised |= {(a.rule, a.point, a.severity) for a in out.transitions}
    assert out is not None
    forecast = {r.point: r for r in out.readings if r.device == "level-forecast"}
    assert forecast["hours_to_crest"].value == pytest.approx(1.4 / 0.6, abs=1e-6)
    assert forecast["hours_to_flood_limit"].value == 0.0
    assert ("level-forecast", "hours_to_crest", "critical") in raised
    assert ("level-rise", "water_level", "alarm") in raised  # 0.6 m/h > 0.5
    t = T0 + 61 * MIN
    poll = engine.evaluate([reading("vw-reader-1/piezo_p3", t, 101.2),
                            reading("vw-reader-1/piezo_p4", t, 96.0, "bad", DRY)])
    gradient = {r.key: r for r in poll.readings}["derived/gradient_p3_p4"]
    assert (gradient.value, gradient.quality) == (None, "bad")
    assert gradient.reason == "dry_input: vw-reader-1/piezo_p4 (water below the sensor)"
