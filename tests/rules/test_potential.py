"""Potential rule: α = (h − h_d)/(h_r − h_d) by hand, its design limit, a head too small to
mean anything, and its drift at similar reservoir levels (also across a restart)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest

from rules.engine import Evaluation, RuleEngine
from tests.rules.sample_site import DAY, HOUR, MIN, T0, reading, settings
from vocab.model import Reading

PIEZO, LEVEL, TAIL = "piezo-1/head", "level-1/water_level", "piezo-1/head2"
ALPHA = "p1-potential/alpha"
DESIGN = [{"severity": "warning", "value": 0.55}, {"severity": "alarm", "value": 0.6}]


def rule(**extra: Any) -> dict[str, Any]:
    return {"id": "p1-potential", "type": "potential", "point": PIEZO, "reservoir": LEVEL,
            "downstream": 100.0, "high": DESIGN, **extra}


def engine(*rules: dict[str, Any], history: Any = None, interval_s: float = 300
           ) -> RuleEngine:
    return RuleEngine(settings(list(rules), interval_s=interval_s).rule_site(),
                      history=history)


def poll(e: RuleEngine, t: int, piezo: float, level: float, **more: float) -> Evaluation:
    readings = [reading(LEVEL, t, level), reading(PIEZO, t, piezo)]
    readings += [reading(key, t, value) for key, value in more.items()]
    return e.evaluate(readings)


def published(out: Evaluation, key: str = ALPHA) -> Reading:
    return {r.key: r for r in out.readings}[key]


def test_alpha_by_hand_and_its_design_limit() -> None:
    e = engine(rule())
    # h = 110, h_r = 120, h_d = 100: α = 10/20 = 0.5.
    first = published(poll(e, T0, 110.0, 120.0))
    assert (first.value, first.quality, first.unit, first.reason) == (0.5, "good", "", None)
    # h = 112: α = 12/20 = 0.6, above the warning (0.55), not above the alarm (0.6 itself).
    out = poll(e, T0 + 5 * MIN, 112.0, 120.0)
    assert published(out).value == 0.6
    assert [(t.state, t.severity, t.limit) for t in out.transitions] == [
        ("raised", "warning", 0.55)]
    assert out.transitions[0].point == "alpha"
    assert "piezometric potential α = 0.6" in out.transitions[0].message
    # h = 112.5: α = 12.5/20 = 0.625 > 0.6.
    out = poll(e, T0 + 10 * MIN, 112.5, 120.0)
    assert published(out).value == 0.625
    assert [(t.state, t.severity) for t in out.transitions] == [("escalated", "alarm")]


def test_a_head_difference_under_min_head_gives_no_alpha_and_holds_the_alarm() -> None:
    e = engine(rule())
    poll(e, T0, 112.5, 120.0)  # α = 0.625: alarm
    # The pool drawn down to 100.99 m: 0.99 m of head, under 1 m. α would be
    # 0.6/0.99 = 0.606, a ratio of small differences: not computed, and the alarm held.
    out = poll(e, T0 + 5 * MIN, 100.6, 100.99)
    alpha = published(out)
    assert (alpha.value, alpha.quality) == (None, "bad")
    assert alpha.reason == "small_head: reservoir − downstream = 0.99 m, under min_head 1 m"
    assert out.transitions == []
    assert [(n.rule, n.point, n.reason) for n in out.notes] == [
        ("p1-potential", ALPHA, alpha.reason)]
    # Exactly 1 m of head is enough: α = 0.6/1.0.
    at_edge = published(poll(e, T0 + 10 * MIN, 100.6, 101.0))
    assert (at_edge.value, at_edge.quality) == (0.6, "good")


def test_downstream_as_a_gauge_or_a_site_level() -> None:
    e = engine(rule(downstream=TAIL))
    # Tailwater 102 m: α = (110 − 102)/(120 − 102) = 8/18.
    out = poll(e, T0, 110.0, 120.0, **{TAIL: 102.0})
    assert published(out).value == round(8 / 18, 6)
    # The tailwater gauge goes quiet: 3 poll intervals later its reading is stale and α
    # is suspect, computed from the last tailwater level.
    later = poll(e, T0 + 20 * MIN, 110.0, 120.0)
    alpha = published(later)
    assert (alpha.value, alpha.quality) == (round(8 / 18, 6), "suspect")
    assert alpha.reason == f"stale_input: {TAIL} is 1200 s old"
    # The site's dead level (110 m in the sample site) as the downstream level.
    e = engine(rule(downstream="dead"))
    assert published(poll(e, T0, 113.0, 120.0)).value == 0.3  # 3/10


def test_a_dry_piezometer_gives_no_alpha() -> None:
    e = engine(rule())
    out = e.evaluate([reading(LEVEL, T0, 120.0), reading(PIEZO, T0, 104.0, "bad", "dry")])
    alpha = published(out)
    assert (alpha.value, alpha.quality) == (None, "bad")
    assert alpha.reason == f"dry_input: {PIEZO} (water below the sensor)"


# --- drift at similar reservoir levels ---------------------------------------------------

MIDNIGHT = T0 - 8 * HOUR  # 2024-07-01 00:00 Beijing time: daily bins start here
DRIFT = {"window": "30d", "min_age": "7d", "level_band": 0.5, "min_samples": 10,
         "high": [{"severity": "warning", "value": 0.05}]}


def day_of_readings(e: RuleEngine, day: int, alpha: float, level: float) -> list[Evaluation]:
    """Four readings (00, 06, 12, 18 h) giving ``alpha`` at ``level``, h_d = 100 m."""
    piezo = round(100.0 + alpha * (level - 100.0), 9)
    return [poll(e, MIDNIGHT + day * DAY + k * 6 * HOUR, piezo, level) for k in range(4)]


def history_of(evaluations: list[Evaluation]) -> Any:
    """A store of what the engine returned: every reading, as HistoryReader gives them."""
    stored: dict[str, list[Reading]] = defaultdict(list)
    for out in evaluations:
        for r in out.readings:
            stored[r.key].append(r)

    def history(point: str, from_ms: int, to_ms: int) -> list[Reading]:
        return [r for r in stored[point] if from_ms <= r.ts_ms <= to_ms]
    return history


def thirty_days(e: RuleEngine) -> list[Evaluation]:
    # Even days at 120 m with α creeping up 0.001 a day (0.400 … 0.428); odd days at 115 m
    # (a different pool, a different α: 0.30), which the comparison must leave out.
    out: list[Evaluation] = []
    for day in range(30):
        at_pool = day % 2 == 0
        out += day_of_readings(e, day, 0.40 + 0.001 * day if at_pool else 0.30,
                               120.0 if at_pool else 115.0)
    return out


def test_alpha_drift_against_the_median_at_similar_reservoir_levels() -> None:
    e = engine(rule(high=[], drift=DRIFT), interval_s=6 * 3600)
    before = thirty_days(e)
    assert all(t == [] for t in (out.transitions for out in before))
    # Day 30, 00:00, pool at 120.2 m (within 0.5 m of 120), piezometer at 110.1 m:
    # α = (110.1 − 100)/(120.2 − 100) = 0.5.
    # References: days at least 7 days old (≤ day 23) in the last 30 days (≥ day 0) at
    # 120 ± 0.5 m: the even days 0 … 22, α 0.400, 0.402, …, 0.422: median 0.411.
    out = poll(e, MIDNIGHT + 30 * DAY, 110.1, 120.2)
    drift = published(out, "p1-potential/alpha_drift")
    assert drift.quality == "good"
    assert drift.value == pytest.approx(0.5 - 0.411, abs=1e-9)
    assert [(t.state, t.severity, t.point) for t in out.transitions] == [
        ("raised", "warning", "alpha_drift")]


def test_alpha_drift_is_rebuilt_from_the_store_after_a_restart() -> None:
    first = engine(rule(high=[], drift=DRIFT), interval_s=6 * 3600)
    history = history_of(thirty_days(first))
    restarted = engine(rule(high=[], drift=DRIFT), history=history, interval_s=6 * 3600)
    drift = published(poll(restarted, MIDNIGHT + 30 * DAY, 110.1, 120.2),
                      "p1-potential/alpha_drift")
    assert drift.value == pytest.approx(0.089, abs=1e-9)


def test_alpha_drift_needs_enough_days_at_a_similar_level() -> None:
    e = engine(rule(high=[], drift=DRIFT), interval_s=6 * 3600)
    thirty_days(e)
    # At 117.5 m no past day was within 0.5 m: no reference, the drift is not computed.
    drift = published(poll(e, MIDNIGHT + 30 * DAY, 110.0, 117.5), "p1-potential/alpha_drift")
    assert (drift.value, drift.quality) == (None, "bad")
    assert drift.reason == ("insufficient_history: 0 days at reservoir level 117.50 ± 0.5 m, "
                            "need 10")


def test_config_checks() -> None:
    from rules.potential import PotentialConfig

    with pytest.raises(ValueError, match="distinct names"):
        PotentialConfig.model_validate(rule(drift={**DRIFT, "name": "alpha"}))
    with pytest.raises(ValueError, match="min_age must be shorter"):
        PotentialConfig.model_validate(rule(drift={**DRIFT, "min_age": "30d"}))
    with pytest.raises(ValueError, match="greater than 0"):
        PotentialConfig.model_validate(rule(min_head=0))
