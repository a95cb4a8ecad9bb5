"""Threshold rule: delays in samples and in time, hysteresis edges, held state on bad data.

The basic ladder, hysteresis and restore are covered in tests/edge/test_threshold.py.
"""

from __future__ import annotations

from rules.alarms import AlarmBook
from rules.base import Context, Stale
from rules.configtypes import Delay
from rules.threshold import Level, ThresholdRule
from tests.rules.sample_site import MIN, T0, reading
from vocab.model import Reading

LEVEL = "level-1/water_level"


def rule(**delays: Delay) -> ThresholdRule:
    return ThresholdRule("level-high", LEVEL, [Level("warning", 123.5), Level("alarm", 124.8)],
                         [Level("warning", 110.0)], 0.05, **delays)


def run(r: ThresholdRule, values: list[float], step_ms: int = 5 * MIN
        ) -> list[tuple[int, str, str | None]]:
    """(sample index, state, severity) of every transition."""
    book = AlarmBook()
    out = []
    for i, value in enumerate(values):
        x = reading(LEVEL, T0 + i * step_ms, value)
        for judgement in r.judge(x, Context(x.ts_ms)):
            assert not isinstance(judgement, Stale)
            for t in book.update(r.id, "level-1", "water_level", judgement, x.ts_ms, "m"):
                out.append((i, t.state, t.severity))
    return out


def test_on_delay_in_samples_needs_consecutive_exceedances() -> None:
    r = rule(on_delay=Delay(samples=3))
    # Two above, one below, then three above: raised on the third in a row.
    assert run(r, [123.6, 123.6, 123.4, 123.6, 123.6, 123.6]) == [(5, "raised", "warning")]


def test_on_delay_is_per_level() -> None:
    r = rule(on_delay=Delay(samples=3))
    # warning, warning, alarm: the warning level held three samples, the alarm level one.
    assert run(r, [123.6, 123.7, 124.9, 124.9, 124.9]) == [
        (2, "raised", "warning"), (4, "escalated", "alarm")]


def test_on_delay_in_time() -> None:
    r = rule(on_delay=Delay(duration=600))
    # At 5-min polls, 10 min above the limit means the third sample (0, 5, 10 min).
    assert run(r, [123.6, 123.6, 123.6]) == [(2, "raised", "warning")]
    r = rule(on_delay=Delay(duration=600))
    assert run(r, [123.6, 123.6, 123.6], step_ms=4 * MIN) == []


def test_off_delay_holds_the_alarm_until_the_value_stays_back() -> None:
    r = rule(off_delay=Delay(samples=2))
    assert run(r, [123.6, 123.4, 123.6, 123.4, 123.4]) == [
        (0, "raised", "warning"), (4, "cleared", "warning")]


def test_off_delay_steps_down_one_level_at_a_time_as_each_holds() -> None:
    r = rule(off_delay=Delay(samples=2))
    assert run(r, [124.9, 123.6, 123.6, 123.0, 123.0]) == [
        (0, "raised", "alarm"), (2, "de-escalated", "warning"), (4, "cleared", "warning")]


def test_hysteresis_band_edges() -> None:
    # Raised strictly above 123.5; held while > 123.45; 123.45 itself is outside the band.
    assert run(rule(), [123.5]) == []
    assert run(rule(), [123.500001, 123.450001, 123.45]) == [
        (0, "raised", "warning"), (2, "cleared", "warning")]


def test_change_of_side_clears_and_raises_a_new_alarm() -> None:
    # Above the flood limit, then below the dead level (a gauge swap, say): two conditions.
    assert run(rule(), [123.6, 109.0]) == [
        (0, "raised", "warning"), (1, "cleared", "warning"), (1, "raised", "warning")]


def test_suspect_reading_holds_the_alarm_and_says_why() -> None:
    r = rule()
    book = AlarmBook()
    x = reading(LEVEL, T0, 123.6)
    (verdict,) = r.judge(x, Context(T0))
    assert not isinstance(verdict, Stale)
    assert book.update(r.id, "level-1", "water_level", verdict, T0, "m")[0].state == "raised"
    suspect = Reading("level-1", "water_level", T0 + MIN, 120.0, "m", "suspect", None,
                      "gross_error: 9.1 (pauta)")
    assert r.judge(suspect, Context(T0 + MIN)) == [
        Stale("suspect_input: level-1/water_level gross_error: 9.1 (pauta)")]
    assert r.held == "warning"
