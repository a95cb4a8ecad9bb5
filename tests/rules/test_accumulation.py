"""Accumulation rule: published sums, window edges, the 08:00 day, events, incomplete data."""

from __future__ import annotations

from typing import Any

import pytest

from rules.accumulation import AccumulationConfig, AccumulationRule
from rules.alarms import AlarmBook
from rules.base import Context, HistoryProvider, RuleEnv, Stale, Verdict
from tests.rules.sample_site import HOUR, MIN, T0, reading
from vocab.model import AlarmTransition, Reading

GAUGE = "level-1/rain"


def make(history: HistoryProvider | None = None, **config: Any) -> AccumulationRule:
    base: dict[str, Any] = {"id": "rain", "type": "accumulation", "point": GAUGE}
    env = RuleEnv({}, "Asia/Shanghai", {GAUGE: 300.0}, {GAUGE: "mm"}, history)
    return AccumulationRule(AccumulationConfig.model_validate({**base, **config}), env)


class Gauge:
    """Feeds increments through a rule as the engine does, collecting sums and alarms."""

    def __init__(self, rule: AccumulationRule) -> None:
        self.rule = rule
        self.book = AlarmBook()
        self.transitions: list[AlarmTransition] = []
        self.stale: list[Stale] = []

    def poll(self, ts_ms: int, mm: float | None, quality: str = "good") -> dict[str, Reading]:
        source = reading(GAUGE, ts_ms, mm, quality, None if quality == "good" else "timeout",
                         unit="mm")
        sums = self.rule.produce(source, Context(ts_ms))
        for produced in sums:
            for judgement in self.rule.judge(produced, Context(ts_ms)):
                if isinstance(judgement, Stale):
                    self.stale.append(judgement)
                    continue
                device, point = produced.key.split("/", 1)
                self.transitions += self.book.update("rain", device, point, judgement,
                                                     produced.ts_ms, "mm")
        return {r.point: r for r in sums if r.ts_ms == ts_ms}

    def states(self) -> list[tuple[str, str, str | None]]:
        return [(t.point, t.state, t.severity) for t in self.transitions]


def warmed(rule: AccumulationRule, until_ms: int) -> Gauge:
    """A gauge that has reported dry 5-min increments for a day before ``until_ms``."""
    gauge = Gauge(rule)
    ts = until_ms - 25 * HOUR
    while ts <= until_ms:
        gauge.poll(ts, 0.0)
        ts += 5 * MIN
    return gauge


def test_default_outputs_are_the_standard_windows_and_the_day() -> None:
    config = AccumulationConfig.model_validate({"id": "rain", "type": "accumulation",
                                                "point": GAUGE})
    assert config.outputs() == ["rain/rain_1h", "rain/rain_3h", "rain/rain_6h",
                                "rain/rain_12h", "rain/rain_24h", "rain/rain_day"]
    custom = AccumulationConfig.model_validate({
        "id": "rain", "type": "accumulation", "point": GAUGE, "device": "gauge-1-sums",
        "windows": [{"window": "30min"}, {"window": 7200, "name": "two_hours"}],
        "day": None, "event": {"dry_gap": "6h"}})
    assert custom.outputs() == ["gauge-1-sums/rain_30min", "gauge-1-sums/two_hours",
                                "gauge-1-sums/rain_event"]


def test_window_sums_are_half_open() -> None:
    gauge = warmed(make(windows=[{"window": "1h"}], day=None), T0)
    t = T0 + 2 * HOUR
    gauge.poll(t - HOUR, 1.0)  # stamped exactly at t − 1 h: outside (t − 1 h, t]
    gauge.poll(t - HOUR + 5 * MIN, 2.0)
    sums = gauge.poll(t, 4.0)
    assert sums["rain_1h"].value == 6.0
    assert sums["rain_1h"].quality == "good"
    assert gauge.poll(t + 5 * MIN, 0.0)["rain_1h"].value == 4.0  # the 2.0 slid out


def test_cma_orange_is_reached_at_exactly_50_mm_in_3_hours() -> None:
    # 36 five-minute counts of 0.2-mm tips: 34 × 1.4 mm + 2 × 1.2 mm = 50.0 mm.
    gauge = warmed(make(windows=[{"window": "3h", "high": [
        {"severity": "alarm", "value": 50}, {"severity": "critical", "value": 100}]}],
        day=None), T0)
    counts = [1.4] * 34 + [1.2] * 2
    for i, mm in enumerate(counts):
        sums = gauge.poll(T0 + (i + 1) * 5 * MIN, mm)
        if i < 35:
            assert gauge.transitions == []
    assert sums["rain_3h"].value == 50.0
    assert gauge.states() == [("rain_3h", "raised", "alarm")]
    assert "rain/rain_3h alarm: rainfall 50 mm at or above limit 50 mm" in \
        gauge.transitions[0].message


def test_short_duration_heavy_rain_clears_when_the_hour_slides_past() -> None:
    gauge = warmed(make(windows=[{"window": "1h", "high": [
        {"severity": "warning", "value": 20}]}], day=None), T0)
    gauge.poll(T0 + 5 * MIN, 20.0)
    for i in range(2, 13):
        gauge.poll(T0 + i * 5 * MIN, 0.0)
    assert gauge.states() == [("rain_1h", "raised", "warning")]
    gauge.poll(T0 + 65 * MIN, 0.0)  # the 20 mm stamped at 5 min is now at t − 1 h
    assert gauge.states()[-1] == ("rain_1h", "cleared", "warning")


def test_rainfall_day_runs_08_to_08_and_its_total_is_stamped_at_the_end() -> None:
    gauge = warmed(make(windows=[{"window": "1h"}]), T0 - 2 * HOUR)
    gauge.poll(T0 - 2 * MIN, 3.0)  # 07:58: closing day
    # 08:03: the first poll of the next day. The closed day's total is published at
    # 08:00, then the new day's running total.
    sums = gauge.rule.produce(reading(GAUGE, T0 + 3 * MIN, 1.5, unit="mm"),
                              Context(T0 + 3 * MIN))
    days = [(r.ts_ms, r.value) for r in sums if r.point == "rain_day"]
    assert days == [(T0, 3.0), (T0 + 3 * MIN, 1.5)]


def test_an_increment_stamped_at_08_00_belongs_to_the_closing_day() -> None:
    gauge = warmed(make(windows=[{"window": "1h"}]), T0 - 2 * HOUR)
    assert gauge.poll(T0, 2.0)["rain_day"].value == 2.0  # the day (T0 − 24 h, T0]
    assert gauge.poll(T0 + 1, 0.5)["rain_day"].value == 0.5  # 08:00:00.001: next day


def test_event_totals_end_after_the_dry_gap() -> None:
    gauge = warmed(make(windows=[{"window": "1h"}], day=None,
                        event={"dry_gap": "1h", "high": [{"severity": "warning", "value": 10}]}),
                   T0)
    assert gauge.poll(T0 + 5 * MIN, 6.0)["rain_event"].value == 6.0
    gauge.poll(T0 + 10 * MIN, 5.0)
    assert gauge.states() == [("rain_event", "raised", "warning")]
    # Dry for exactly the gap: still the same event; one more poll ends it.
    assert gauge.poll(T0 + 70 * MIN, 0.0)["rain_event"].value == 11.0
    ended = gauge.poll(T0 + 75 * MIN, 0.0)["rain_event"]
    assert (ended.value, ended.quality) == (0.0, "good")
    assert gauge.states()[-1] == ("rain_event", "cleared", "warning")


def test_a_gauge_outage_makes_sums_suspect_and_cannot_clear_the_alarm() -> None:
    gauge = warmed(make(windows=[{"window": "1h", "high": [
        {"severity": "warning", "value": 20}, {"severity": "alarm", "value": 30}]}],
        day=None), T0)
    gauge.poll(T0 + 5 * MIN, 25.0)
    assert gauge.states() == [("rain_1h", "raised", "warning")]
    gauge.poll(T0 + 10 * MIN, None, "bad")  # the gauge stops answering
    for i in range(3, 20):
        sums = gauge.poll(T0 + i * 5 * MIN, None, "bad")
    # 95 min: the known 25 mm slid out of the hour, but the hour is unknown, not dry.
    assert sums["rain_1h"].quality == "suspect"
    assert sums["rain_1h"].reason == "incomplete: gauge data gap 0 s ago"
    assert gauge.states() == [("rain_1h", "raised", "warning")]
    assert gauge.stale[-1].point == "rain/rain_1h"
    # The gauge comes back with 35 mm counted over the outage: an incomplete window may
    # still escalate, since the true sum is at least what was counted.
    sums = gauge.poll(T0 + 100 * MIN, 35.0)
    assert sums["rain_1h"].quality == "suspect"
    assert gauge.states()[-1] == ("rain_1h", "escalated", "alarm")
    # An hour after the recovery the window is complete again and may clear.
    for i in range(21, 34):
        sums = gauge.poll(T0 + i * 5 * MIN, 0.0)
    assert sums["rain_1h"].quality == "good"
    assert gauge.states()[-1] == ("rain_1h", "cleared", "alarm")


def test_start_without_history_is_incomplete_until_a_window_has_passed() -> None:
    gauge = Gauge(make(windows=[{"window": "1h"}], day=None))
    first = gauge.poll(T0, 0.0)["rain_1h"]
    assert (first.quality, first.reason) == ("suspect", "incomplete: gauge data gap 0 s ago")
    assert gauge.poll(T0 + 55 * MIN, 0.0)["rain_1h"].quality == "suspect"
    assert gauge.poll(T0 + 60 * MIN, 0.0)["rain_1h"].quality == "good"


def test_restart_rebuilds_the_sums_from_history_and_keeps_the_alarm() -> None:
    stored = [reading(GAUGE, T0 - 25 * HOUR + i * 5 * MIN, 0.0, unit="mm")
              for i in range(300)]
    stored += [reading(GAUGE, T0 + 5 * MIN, 25.0, unit="mm"),
               reading(GAUGE, T0 + 10 * MIN, 0.0, unit="mm")]
    asked: list[tuple[str, int, int]] = []

    def history(point: str, from_ms: int, to_ms: int) -> list[Reading]:
        asked.append((point, from_ms, to_ms))
        return [r for r in stored if from_ms <= r.ts_ms <= to_ms]

    rule = make(history, windows=[{"window": "1h", "high": [
        {"severity": "warning", "value": 20}]}], day=None)
    rule.restore_alarm("rain/rain_1h", "warning", "above")
    book = AlarmBook()
    gauge = Gauge(rule)
    gauge.book = book
    sums = gauge.poll(T0 + 15 * MIN, 0.0)
    assert asked == [(GAUGE, T0 + 15 * MIN - 25 * HOUR - 10 * MIN, T0 + 15 * MIN - 1)]
    assert (sums["rain_1h"].value, sums["rain_1h"].quality) == (25.0, "good")
    assert rule.limits["rain/rain_1h"].held == "warning"


def test_sums_are_exact_in_decimal() -> None:
    gauge = warmed(make(windows=[{"window": "1h"}], day=None), T0)
    for i in range(1, 4):
        sums = gauge.poll(T0 + i * 5 * MIN, 0.1)
    assert sums["rain_1h"].value == 0.3  # not 0.30000000000000004


def test_judge_ignores_sums_without_limits() -> None:
    rule = make(windows=[{"window": "1h"}], day=None)
    produced = reading("rain/rain_1h", T0, 99.0, unit="mm")
    assert rule.judge(produced, Context(T0)) == []
    assert rule.alarm_points == ()


@pytest.mark.parametrize("bad", [
    {"windows": [{"window": "1h"}, {"window": 3600}]},
    {"windows": [{"window": "1h", "name": "rain_day"}]},
])
def test_two_sums_with_one_name_are_rejected(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="two sums named"):
        AccumulationConfig.model_validate({"id": "rain", "type": "accumulation",
                                           "point": GAUGE, **bad})


def test_verdicts_name_the_sum_point() -> None:
    rule = make(windows=[{"window": "1h", "high": [{"severity": "warning", "value": 1}]}],
                day=None)
    (verdict,) = rule.judge(reading("rain/rain_1h", T0 + MIN, 2.0, unit="mm"),
                            Context(T0 + MIN))
    assert isinstance(verdict, Verdict)
    assert (verdict.point, verdict.inclusive, verdict.quantity) == ("rain/rain_1h", True,
                                                                    "rainfall")
