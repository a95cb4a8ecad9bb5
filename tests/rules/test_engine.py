"""Rule engine: stage order, doubtful data, restart, orphans, storms, acknowledgement."""

from __future__ import annotations

from typing import Any

import pytest
from structlog.testing import capture_logs

from rules.engine import RuleEngine, RuleNote
from tests.rules.sample_site import MIN, T0, S, reading, settings
from vocab.model import ActiveAlarm, AlarmTransition, Reading

LEVEL, PIEZO = "level-1/water_level", "piezo-1/head"

LEVEL_HIGH = {"id": "level-high", "type": "threshold", "point": LEVEL,
              "high": [{"severity": "warning", "value": "flood_limit"},
                       {"severity": "alarm", "value": "design_flood"}], "hysteresis": 0.05}
FREEBOARD = {"id": "freeboard", "expression": "crest - {level-1/water_level}", "unit": "m"}
FREEBOARD_LOW = {"id": "freeboard-low", "type": "threshold", "point": "derived/freeboard",
                 "low": [{"severity": "warning", "value": 2.3}]}
LEVEL_SCREEN = {"id": "level-q", "type": "quality", "point": LEVEL,
                "gross_error": {"window": 30, "floor": 0.05}, "range": [100, 130]}


def active_from(transitions: list[AlarmTransition]) -> list[ActiveAlarm]:
    """What the store would restore: the alarms raised and not cleared, as last updated."""
    alarms: dict[str, ActiveAlarm] = {}
    for t in transitions:
        if t.state == "cleared":
            alarms.pop(t.alarm_id, None)
        elif t.state != "acknowledged":
            assert t.severity is not None
            alarms[t.alarm_id] = ActiveAlarm(t.alarm_id, t.rule, t.device, t.point, t.severity,
                                             t.side, t.limit)
    return list(alarms.values())


def flat_level(engine: RuleEngine, n: int, value: float = 123.0) -> None:
    for i in range(n):
        engine.evaluate([reading(LEVEL, T0 + i * 5 * MIN, value + 0.01 * (i % 3))])


def test_screening_then_derived_then_rules_and_a_gross_error_alarms_nothing() -> None:
    engine = RuleEngine(settings([LEVEL_SCREEN, LEVEL_HIGH, FREEBOARD_LOW],
                                 derived=[FREEBOARD]).rule_site())
    flat_level(engine, 15)
    spike = engine.evaluate([reading(LEVEL, T0 + 15 * 5 * MIN, 124.0)])
    level, freeboard = spike.readings
    # The screen re-qualified the spike before anything else saw it: the derived
    # freeboard inherits the doubt, and neither threshold rule raises on it.
    assert (level.quality, level.value) == ("suspect", 124.0)
    assert (level.reason or "").startswith("gross_error: ")
    assert (freeboard.key, freeboard.value, freeboard.quality) == ("derived/freeboard", 2.0,
                                                                   "suspect")
    assert freeboard.reason == f"suspect_input: {LEVEL} {level.reason}"
    assert spike.transitions == []
    assert [(n.rule, n.point) for n in spike.notes] == [
        ("level-high", LEVEL), ("freeboard-low", "derived/freeboard")]


def test_a_real_rise_is_alarmed_once_the_screen_accepts_it() -> None:
    engine = RuleEngine(settings([LEVEL_SCREEN, LEVEL_HIGH], derived=[FREEBOARD]).rule_site())
    flat_level(engine, 15)
    raised = []
    for i in range(15, 22):
        raised += engine.evaluate([reading(LEVEL, T0 + i * 5 * MIN, 123.9)]).transitions
    # Five suspect readings (the screen's reseed_after), then the new level is good.
    assert [(t.state, t.severity, t.ts_ms) for t in raised] == [
        ("raised", "warning", T0 + 20 * 5 * MIN)]


def test_notes_say_why_a_rule_held_until_it_resumes() -> None:
    engine = RuleEngine(settings([LEVEL_HIGH]).rule_site())
    for i in range(3):
        evaluation = engine.evaluate([reading(LEVEL, T0 + i * MIN, None, "bad", "timeout")])
        assert evaluation.notes == (RuleNote("level-high", LEVEL, T0 + i * MIN,
                                             f"bad_input: {LEVEL} timeout"),)
    assert engine.stale == {("level-high", LEVEL)}
    engine.evaluate([reading(LEVEL, T0 + 3 * MIN, 123.0)])
    assert engine.stale == set()


def test_restart_restores_alarms_without_raising_them_again() -> None:
    rules = [LEVEL_HIGH, {"id": "rain", "type": "accumulation", "point": "level-1/rain",
                          "windows": [{"window": "1h", "high": [
                              {"severity": "warning", "value": 20}]}], "day": None},
             {"id": "level-q", "type": "quality", "point": LEVEL, "range": [100, 130]}]
    first = RuleEngine(settings(rules).rule_site())
    made = first.evaluate([reading(LEVEL, T0, 124.9)]).transitions
    made += first.evaluate([reading("level-1/rain", T0, 25.0, unit="mm")]).transitions
    assert [(t.rule, t.state, t.severity) for t in made] == [
        ("level-high", "raised", "alarm"), ("rain", "raised", "warning")]

    second = RuleEngine(settings(rules).rule_site(), active_from(made))
    again = second.evaluate([reading(LEVEL, T0 + MIN, 124.85)]).transitions
    assert again == []  # within the hysteresis band of the restored alarm: held
    down = second.evaluate([reading(LEVEL, T0 + 2 * MIN, 123.0)]).transitions
    assert [(t.alarm_id, t.state) for t in down] == [(made[0].alarm_id, "cleared")]
    # The rainfall alarm is restored too, and an incomplete window may not clear it.
    rain = second.evaluate([reading("level-1/rain", T0 + 5 * MIN, 0.0, unit="mm")])
    assert rain.transitions == []
    assert second.rules["rain"].limits["rain/rain_1h"].held == "warning"


def test_alarms_of_removed_rules_are_cleared_at_the_first_poll() -> None:
    gone = ActiveAlarm("old-rule@1", "old-rule", "level-1", "water_level", "warning", "above",
                       123.0)
    engine = RuleEngine(settings([LEVEL_HIGH]).rule_site(), [gone])
    evaluation = engine.evaluate([reading(PIEZO, T0, 118.0)])
    assert [(t.alarm_id, t.state) for t in evaluation.transitions] == [("old-rule@1",
                                                                        "cleared")]
    assert "old-rule is no longer configured" in evaluation.transitions[0].message
    assert engine.evaluate([reading(PIEZO, T0 + MIN, 118.0)]).transitions == []


def many_rules(n: int) -> list[dict[str, Any]]:
    return [{"id": f"r{i:03d}", "type": "threshold", "point": LEVEL,
             "high": [{"severity": "warning", "value": 123.5}]} for i in range(n)]


def test_an_alarm_storm_is_paced_and_every_transition_delivered_in_order() -> None:
    engine = RuleEngine(settings(many_rules(100)).rule_site(), storm_burst=20, storm_per_minute=20)
    delivered: list[AlarmTransition] = []
    first = engine.evaluate([reading(LEVEL, T0, 124.0)])
    assert (len(first.transitions), first.deferred) == (20, 80)
    delivered += first.transitions
    # The flood recedes while the raises are still queued: the clears queue behind them.
    second = engine.evaluate([reading(LEVEL, T0 + MIN, 123.0)])
    assert (len(second.transitions), second.deferred) == (20, 160)
    delivered += second.transitions
    for i in range(2, 10):
        delivered += engine.evaluate([reading(LEVEL, T0 + i * MIN, 123.0)]).transitions
    assert engine.limiter.pending == 0
    assert len(delivered) == 200
    by_alarm: dict[str, list[str]] = {}
    for t in delivered:
        by_alarm.setdefault(t.alarm_id, []).append(t.state)
    assert len(by_alarm) == 100
    assert all(states == ["raised", "cleared"] for states in by_alarm.values())
    # Raises go out before clears, and each keeps the time of the reading behind it.
    assert [t.state for t in delivered[:100]] == ["raised"] * 100
    assert {t.ts_ms for t in delivered if t.state == "raised"} == {T0}


def test_critical_transitions_are_never_held_back() -> None:
    rules = [*many_rules(30), {"id": "overtopping", "type": "threshold", "point": LEVEL,
                               "high": [{"severity": "critical", "value": 125.5}]}]
    engine = RuleEngine(settings(rules).rule_site(), storm_burst=10, storm_per_minute=1)
    evaluation = engine.evaluate([reading(LEVEL, T0, 126.0)])
    assert evaluation.transitions[0].rule == "overtopping"
    assert evaluation.transitions[0].severity == "critical"
    assert len(evaluation.transitions) == 11 and evaluation.deferred == 20


def test_a_flapping_condition_cannot_build_an_endless_backlog() -> None:
    # A level toggling across the limit every 10 s: 6 transitions a minute against a pace
    # of 1 a minute. Nothing is held longer than the maximum delay.
    engine = RuleEngine(settings(many_rules(1)).rule_site(), storm_burst=1, storm_per_minute=1,
                        storm_max_delay_s=60)
    delivered: list[tuple[int, int]] = []
    for i in range(60):
        now = T0 + i * 10 * S
        for t in engine.evaluate([reading(LEVEL, now, 124.0 if i % 2 == 0 else 123.0)]
                                 ).transitions:
            delivered.append((now, t.ts_ms))
    assert max(released - stamped for released, stamped in delivered) <= 60 * S
    assert engine.limiter.pending <= 7
    assert len(delivered) + engine.limiter.pending == 60


def test_drain_hands_over_everything_still_held() -> None:
    engine = RuleEngine(settings(many_rules(50)).rule_site(), storm_burst=5, storm_per_minute=1)
    released = engine.evaluate([reading(LEVEL, T0, 124.0)]).transitions
    rest = engine.drain()
    assert len(released) + len(rest) == 50
    assert {t.rule for t in released + rest} == {f"r{i:03d}" for i in range(50)}
    assert engine.limiter.pending == 0


def test_acknowledge() -> None:
    engine = RuleEngine(settings([LEVEL_HIGH], language="zh").rule_site())
    (raised,) = engine.evaluate([reading(LEVEL, T0, 123.6)]).transitions
    ack = engine.acknowledge(raised.alarm_id, T0 + MIN)
    assert ack is not None
    assert (ack.state, ack.alarm_id, ack.severity, ack.ts_ms) == (
        "acknowledged", raised.alarm_id, "warning", T0 + MIN)
    assert ack.message == f"{raised.alarm_id} 已确认"
    assert engine.acknowledge(raised.alarm_id, T0 + 2 * MIN) is None  # already
    assert engine.acknowledge("no-such@1", T0) is None


def test_an_alarm_still_held_by_the_storm_limiter_cannot_be_acknowledged() -> None:
    engine = RuleEngine(settings(many_rules(3)).rule_site(), storm_burst=1, storm_per_minute=1)
    (released,) = engine.evaluate([reading(LEVEL, T0, 124.0)]).transitions
    held_id = next(a.alarm_id for a in engine.book.active.values()
                   if a.alarm_id != released.alarm_id)
    assert engine.acknowledge(held_id, T0) is None
    assert engine.acknowledge(released.alarm_id, T0) is not None


def test_a_failing_rule_does_not_stop_the_others_or_the_poll(monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    engine = RuleEngine(settings([*many_rules(2), FREEBOARD_LOW],
                                 derived=[FREEBOARD]).rule_site())

    def broken(*args: object) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(engine.rules["r000"], "judge", broken)
    evaluation = engine.evaluate([reading(LEVEL, T0, 124.0)])
    assert [t.rule for t in evaluation.transitions] == ["r001", "freeboard-low"]
    assert [r.key for r in evaluation.readings] == [LEVEL, "derived/freeboard"]


def test_an_engine_failure_still_returns_the_readings(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = RuleEngine(settings([LEVEL_HIGH]).rule_site())

    def broken(readings: object) -> None:
        raise RuntimeError("a bug in the engine itself")

    monkeypatch.setattr(engine, "_evaluate", broken)
    poll = [reading(LEVEL, T0, 124.0)]
    evaluation = engine.evaluate(poll)
    assert evaluation.readings == tuple(poll) and evaluation.transitions == []


def test_messages_follow_the_site_language() -> None:
    engine = RuleEngine(settings([FREEBOARD_LOW], derived=[FREEBOARD], language="zh").rule_site())
    (raised,) = engine.evaluate([reading(LEVEL, T0, 123.8)]).transitions
    assert raised.message == ("derived/freeboard 预警：当前值 2.2m 低于限值 2.3m"
                              "（规则 freeboard-low）")


def test_readings_of_other_devices_keep_their_latest_value_for_derived_points() -> None:
    gradient = {"id": "gradient", "expression": "({piezo-1/head} - {level-1/water_level}) / 10"}
    engine = RuleEngine(settings([], derived=[gradient]).rule_site())
    engine.evaluate([reading(LEVEL, T0, 110.0)])
    evaluation = engine.evaluate([reading(PIEZO, T0 + MIN, 111.0)])
    derived: Reading = evaluation.readings[-1]
    assert (derived.key, derived.value, derived.quality, derived.ts_ms) == (
        "derived/gradient", 0.1, "good", T0 + MIN)


def test_units_of_derived_points_and_sums() -> None:
    gradient = {"id": "gradient", "expression": "({piezo-1/head} - {piezo-1/head2}) / 12.5"}
    rain = {"id": "rain", "type": "accumulation", "point": "level-1/rain"}
    engine = RuleEngine(settings([rain], derived=[gradient, FREEBOARD]).rule_site())
    assert engine.units["derived/gradient"] == ""  # a ratio: no unit, not the sums' mm
    assert engine.units["derived/freeboard"] == "m"
    assert engine.units["rain/rain_24h"] == "mm"
    assert engine.env.interval_s("derived/gradient") == 300


def test_the_book_keeps_when_and_why_of_each_active_alarm_as_the_store_does() -> None:
    engine = RuleEngine(settings([LEVEL_HIGH]).rule_site())
    (raised,) = engine.evaluate([reading(LEVEL, T0, 123.6)]).transitions
    engine.evaluate([reading(LEVEL, T0 + MIN, 123.7)])  # the same level: no transition
    (escalated,) = engine.evaluate([reading(LEVEL, T0 + 2 * MIN, 125.0)]).transitions
    (alarm,) = engine.book.active.values()
    assert (alarm.state, alarm.raised_ms, alarm.updated_ms, alarm.value, alarm.limit) == (
        "escalated", T0, T0 + 2 * MIN, 125.0, 124.8)
    assert alarm.message == escalated.message and alarm.message != raised.message


def test_a_storm_is_logged_when_it_begins_and_when_it_is_over() -> None:
    engine = RuleEngine(settings(many_rules(100)).rule_site(), storm_burst=20, storm_per_minute=20)
    with capture_logs() as logs:
        for i in range(10):
            engine.evaluate([reading(LEVEL, T0 + i * MIN, 124.0 if i == 0 else 123.0)])
    storm = [(e["event"], e.get("deferred", e.get("most_deferred"))) for e in logs
             if e["event"].startswith("alarm_storm")]
    assert storm == [("alarm_storm_paced", 80), ("alarm_storm_over", 160)]
