"""A dry piezometer (water below the sensor) is no measurement for limits, derived points,
statistical rules or screening, and the sensor is still counted as answering."""

from __future__ import annotations

from rules.engine import RuleEngine
from tests.rules.sample_site import MIN, T0, reading, settings
from vocab.model import DRY

WET, DRY_KEY = "piezo-1/head", "piezo-1/head2"
HIGH = [{"severity": "warning", "value": 104.0}]
RULES = [
    {"id": "wet-high", "type": "threshold", "point": WET, "high": HIGH},
    {"id": "dry-high", "type": "threshold", "point": DRY_KEY, "high": HIGH},
    # Offline after 3 intervals and stuck after 3 equal readings: a dry sensor sits at its
    # elevation for weeks, which is neither.
    {"id": "dry-quality", "type": "quality", "point": DRY_KEY, "range": [90, 130],
     "offline": {"after": 3}, "stuck": {"samples": 3}},
]
# J = (H1 − H2)/L between the two piezometers, L = 10 m.
GRADIENT = {"id": "gradient", "expression": f"({{{WET}}} - {{{DRY_KEY}}}) / 10", "unit": ""}


def test_a_dry_sensor_beside_a_wet_one_feeds_no_limit_and_no_gradient() -> None:
    engine = RuleEngine(settings(RULES, derived=[GRADIENT]).rule_site())
    transitions = []
    for i in range(12):
        t = T0 + i * 5 * MIN
        # The wet piezometer is above its limit; the dry one reports its elevation, 105 m,
        # which taken as a level would be above the limit too.
        out = engine.evaluate([reading(WET, t, 104.5), reading(DRY_KEY, t, 105.0, "bad", DRY)])
        transitions += out.transitions
        by_key = {r.key: r for r in out.readings}
        assert (by_key[DRY_KEY].quality, by_key[DRY_KEY].reason) == ("bad", DRY)
        gradient = by_key["derived/gradient"]
        assert (gradient.value, gradient.quality) == (None, "bad")
        assert gradient.reason == f"dry_input: {DRY_KEY} (water below the sensor)"
        assert ("dry-high", DRY_KEY, f"dry_input: {DRY_KEY} (water below the sensor)") in {
            (n.rule, n.point, n.reason) for n in out.notes}
    # Only the wet sensor's limit raised; the dry one is neither offline nor stuck.
    assert [(t.rule, t.state) for t in transitions] == [("wet-high", "raised")]


def test_a_wet_reading_again_is_judged_and_the_gradient_computed() -> None:
    engine = RuleEngine(settings(RULES, derived=[GRADIENT]).rule_site())
    engine.evaluate([reading(WET, T0, 103.0), reading(DRY_KEY, T0, 100.0, "bad", DRY)])
    out = engine.evaluate([reading(WET, T0 + 5 * MIN, 103.0),
                           reading(DRY_KEY, T0 + 5 * MIN, 101.0)])
    gradient = {r.key: r for r in out.readings}["derived/gradient"]
    assert (gradient.value, gradient.quality) == (0.2, "good")  # (103 − 101)/10


def test_a_dry_reading_stored_good_by_an_older_release_is_still_no_level() -> None:
    # Before dry readings were marked bad, the store kept them good with reason "dry".
    engine = RuleEngine(settings(RULES[:2]).rule_site())
    out = engine.evaluate([reading(DRY_KEY, T0, 105.0, "good", DRY)])
    assert out.transitions == []
    assert [n.reason for n in out.notes] == [f"dry_input: {DRY_KEY} (water below the sensor)"]


def test_which_reasons_mean_dry() -> None:
    from vocab.model import Reading

    def dry(reason: str | None) -> bool:
        return Reading("piezo-1", "head", T0, 100.0, "m", "bad", None, reason).dry

    # The calibration's flag, with a flag or a later reason after it: dry.
    assert dry("dry") and dry("dry; clock_invalid") and dry("dry,other_flag")
    # A derived point on a dry input, or another reason: not itself a dry sensor.
    assert not dry("dry_input: piezo-1/head2 (water below the sensor)")
    assert not dry("out_of_range; dry") and not dry(None)
