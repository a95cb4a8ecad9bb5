"""Threshold rule and alarm lifecycle on hand-made series."""

from __future__ import annotations

from rules.alarms import AlarmBook
from rules.threshold import Level, ThresholdRule
from vocab.model import AlarmTransition, Reading


def run(values: list[float], rule: ThresholdRule | None = None,
        book: AlarmBook | None = None) -> list[tuple[str, str | None, float | None]]:
    rule = rule or ThresholdRule("level-high", "level-1/water_level",
                                 [Level("warning", 123.5), Level("alarm", 124.2)], [], 0.05)
    book = book or AlarmBook()
    out: list[AlarmTransition] = []
    for i, v in enumerate(values):
        verdict = rule.evaluate(Reading("level-1", "water_level", i, v, "m", "good"))
        assert verdict is not None
        t = book.apply(rule.id, "level-1", "water_level", verdict, i, "m")
        if t:
            out.append(t)
    return [(t.state, t.severity, t.limit) for t in out]


def test_exceedance_is_strict() -> None:
    assert run([123.5]) == []
    assert run([123.51]) == [("raised", "warning", 123.5)]


def test_hysteresis_holds_the_level_until_the_band_is_passed() -> None:
    # 123.46 is below the limit but inside the 0.05 band: still raised.
    assert run([123.6, 123.46, 123.52, 123.45]) == [
        ("raised", "warning", 123.5), ("cleared", "warning", 123.5)]


def test_hovering_at_the_limit_does_not_flap() -> None:
    assert run([123.51, 123.49, 123.51, 123.48, 123.52, 123.47]) == [
        ("raised", "warning", 123.5)]


def test_escalation_and_de_escalation() -> None:
    assert run([123.6, 124.3, 124.16, 124.14, 123.4]) == [
        ("raised", "warning", 123.5),
        ("escalated", "alarm", 124.2),
        ("de-escalated", "warning", 123.5),
        ("cleared", "warning", 123.5),
    ]


def test_jump_straight_to_the_highest_level() -> None:
    assert run([124.5, 123.0]) == [("raised", "alarm", 124.2), ("cleared", "alarm", 124.2)]


def test_low_limit_below_dead_level() -> None:
    rule = ThresholdRule("level-low", "level-1/water_level", [], [Level("warning", 110.0)], 0.1)
    assert run([110.5, 109.9, 110.05, 110.11], rule) == [
        ("raised", "warning", 110.0), ("cleared", "warning", 110.0)]


def test_bad_quality_is_not_judged() -> None:
    rule = ThresholdRule("r", "d/p", [Level("warning", 1.0)], [], 0.0)
    assert rule.evaluate(Reading("d", "p", 0, None, "", "bad", None, "timeout")) is None


def test_restored_alarm_is_not_raised_again_and_clears() -> None:
    rule = ThresholdRule("level-high", "level-1/water_level", [Level("warning", 123.5)], [],
                         0.05)
    book = AlarmBook()
    first = run([123.7], rule, book)
    assert first == [("raised", "warning", 123.5)]
    # A restart: a fresh rule and book restored from what the store kept.
    restored_rule = ThresholdRule("level-high", "level-1/water_level",
                                  [Level("warning", 123.5)], [], 0.05)
    restored_rule.restore("warning", "above")
    restored_book = AlarmBook()
    for alarm in book.active.values():
        restored_book.restore(alarm)
    assert run([123.7, 123.48, 123.3], restored_rule, restored_book) == [
        ("cleared", "warning", 123.5)]


def test_chinese_messages() -> None:
    book = AlarmBook("zh")
    rule = ThresholdRule("r", "level-1/water_level", [Level("warning", 123.5)], [], 0.0)
    verdict = rule.evaluate(Reading("level-1", "water_level", 0, 123.62, "m", "good"))
    assert verdict is not None
    t = book.apply("r", "level-1", "water_level", verdict, 0, "m")
    assert t is not None
    assert "预警" in t.message and "高于限值 123.5m" in t.message
