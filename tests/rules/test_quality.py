"""Quality rule: range, jump, gross error, stuck and offline on hand-made series."""

from __future__ import annotations

from typing import Any

import numpy as np

from rules.alarms import AlarmBook
from rules.base import Verdict
from rules.engine import RuleEngine
from rules.quality import QualityConfig, QualityRule
from tests.rules.sample_site import MIN, T0, reading, settings
from vocab.model import AlarmTransition, Reading

PIEZO = "piezo-1/head"
STEP = 5 * MIN


def make(**checks: Any) -> QualityRule:
    config = QualityConfig.model_validate({"id": "q", "type": "quality", "point": PIEZO,
                                           **checks})
    return QualityRule(config, interval_s=300)


class Screen:
    def __init__(self, rule: QualityRule) -> None:
        self.rule = rule
        self.book = AlarmBook()
        self.transitions: list[AlarmTransition] = []

    def feed(self, values: list[float | None], start: int = 0) -> list[Reading]:
        out = []
        for i, value in enumerate(values, start):
            raw = reading(PIEZO, T0 + i * STEP, value, "good" if value is not None else "bad",
                          None if value is not None else "timeout")
            screened, judgements = self.rule.screen(raw)
            out.append(screened)
            for judgement in judgements:
                assert isinstance(judgement, Verdict)
                self.transitions += self.book.update("q", "piezo-1", "head", judgement,
                                                     raw.ts_ms, "m")
        return out

    def states(self) -> list[tuple[str, str]]:
        return [(t.state, t.side) for t in self.transitions]


def qualities(readings: list[Reading]) -> list[str]:
    return [r.quality for r in readings]


def test_out_of_range_is_bad_and_raises_a_device_alarm_until_back() -> None:
    screen = Screen(make(range=[100.0, 130.0]))
    out = screen.feed([118.0, 131.5, 129.9])
    assert qualities(out) == ["good", "bad", "good"]
    assert out[1].reason == "out_of_range: 131.5 outside [100, 130]"
    assert out[1].value == 131.5  # kept: it tells the technician what the sensor said
    assert screen.states() == [("raised", "out_of_range"), ("cleared", "out_of_range")]
    assert screen.transitions[0].value == 131.5 and screen.transitions[0].limit == 130.0
    assert "outside the physical range" in screen.transitions[0].message


def test_jump_is_suspect_until_confirmed_by_agreeing_readings() -> None:
    screen = Screen(make(jump={"max_step": 0.5, "confirm": 3}))
    # One spike (back next reading), then a real step of +2 m held for three readings.
    out = screen.feed([118.0, 118.2, 121.0, 118.3, 120.3, 120.35, 120.4, 120.45])
    assert qualities(out) == ["good", "good", "suspect", "good", "suspect", "suspect",
                              "good", "good"]
    assert out[2].reason == "jump: +2.8 in 300 s (max 0.5)"
    assert screen.transitions == []  # jumps re-qualify readings, they raise nothing


def test_jump_limit_scales_with_the_time_since_the_last_good_reading() -> None:
    screen = Screen(make(jump={"max_step": 0.5}))
    # Two polls missed: 15 min since the last good reading allows 1.5 m.
    out = screen.feed([118.0, None, None, 119.4])
    assert qualities(out) == ["good", "bad", "bad", "good"]


def test_gross_error_is_suspect_and_kept_out_of_the_screen() -> None:
    screen = Screen(make(gross_error={"window": 30, "floor": 0.05}))
    base = [118.00, 118.02, 118.01, 117.99, 118.03, 118.00, 118.02, 117.98, 118.01, 118.00,
            118.02, 118.01]
    out = screen.feed([*base, 118.9, 118.02])
    assert qualities(out) == ["good"] * 12 + ["suspect", "good"]
    reason = out[12].reason or ""
    assert reason.startswith("gross_error: ") and reason.endswith("(pauta)")
    assert 118.9 not in screen.rule.screen_.good_values  # type: ignore[union-attr]


def test_floor_keeps_a_flat_sensor_from_flagging_its_resolution_steps() -> None:
    screen = Screen(make(gross_error={"window": 30, "floor": 0.03}))
    out = screen.feed([118.00] * 15 + [118.01, 118.02, 118.00])
    assert set(qualities(out)) == {"good"}


def test_stuck_sensor_is_suspect_and_raises_until_it_moves() -> None:
    screen = Screen(make(stuck={"samples": 4, "epsilon": 0.001}))
    out = screen.feed([118.0, 118.2, 118.2, 118.2, 118.2005, 118.2, 118.3])
    assert qualities(out) == ["good", "good", "good", "good", "suspect", "suspect", "good"]
    assert screen.states() == [("raised", "stuck"), ("cleared", "stuck")]


def test_offline_after_n_intervals_without_a_good_reading() -> None:
    screen = Screen(make(offline={"after": 3}))
    screen.feed([118.0, None, None])
    assert screen.transitions == []
    screen.feed([None], start=3)
    assert screen.states() == [("raised", "offline")]
    assert "sensor offline" in screen.transitions[0].message
    screen.feed([118.1], start=4)
    assert screen.states()[-1] == ("cleared", "offline")


def test_out_of_range_sensor_that_stops_answering_becomes_offline() -> None:
    screen = Screen(make(range=[100.0, 130.0], offline={"after": 3}))
    screen.feed([118.0, 150.0, None, None, None])
    # Out of range while it answers; once it has not answered either for three polls,
    # the condition is offline: a different alarm for the keeper.
    assert screen.states() == [("raised", "out_of_range"), ("cleared", "out_of_range"),
                               ("raised", "offline")]


def test_a_point_that_stops_reporting_altogether_is_found_at_other_polls() -> None:
    s = settings([{"id": "level-q", "type": "quality", "point": "level-1/water_level",
                   "offline": {"after": 3}}])
    engine = RuleEngine(s.rule_site())
    engine.evaluate([reading("level-1/water_level", T0, 120.0)])
    found = []
    for i in range(1, 6):
        # Only the piezometer reader reports; the level logger's poller hangs.
        found += engine.evaluate([reading(PIEZO, T0 + i * STEP, 118.0)]).transitions
    # 3.5 intervals without a good level reading: at the 20-min poll.
    assert [(t.state, t.side, t.ts_ms) for t in found] == [("raised", "offline",
                                                            T0 + 4 * STEP)]


def test_off_delay_keeps_a_flapping_connection_from_flapping_the_alarm() -> None:
    series: list[float | None] = [118.0, None, None, 118.0, None, None, 118.0, 118.0, 118.0]
    flapping = Screen(make(offline={"after": 2}))
    flapping.feed(series)
    assert flapping.states() == [("raised", "offline"), ("cleared", "offline")] * 2
    steady = Screen(make(offline={"after": 2}, off_delay={"samples": 3}))
    steady.feed(series)
    assert steady.states() == [("raised", "offline"), ("cleared", "offline")]
    assert steady.transitions[1].ts_ms == T0 + 8 * STEP


def test_clock_invalid_readings_are_judged_and_never_look_offline() -> None:
    from rules.quality import QualityConfig, QualityRule
    from vocab.model import CLOCK_INVALID, Reading

    config = QualityConfig.model_validate({
        "id": "q", "type": "quality", "point": "d/p", "range": [0, 10],
        "offline": {"after": 2}})
    rule = QualityRule(config, interval_s=1.0)
    for i in range(6):
        screened, judgements = rule.screen(Reading("d", "p", i * 1000, 5.0, "m", "suspect",
                                                   5.0, CLOCK_INVALID))
        assert screened.quality == "suspect" and screened.reason == CLOCK_INVALID
        assert all(j.severity is None for j in judgements), "not offline: it answers"
    out_of_range, _ = rule.screen(Reading("d", "p", 7000, 50.0, "m", "suspect", 50.0,
                                          CLOCK_INVALID))
    assert out_of_range.quality == "bad"


def test_a_jump_that_is_also_a_gross_error_is_reported_as_both() -> None:
    screen = Screen(make(jump={"max_step": 0.5}, gross_error={"window": 30, "floor": 0.05}))
    calm = [118.0, 118.02] * 10
    out = screen.feed([*calm, 121.0])
    # Jump: 121.0 − 118.02 = +2.98 m in one interval, beyond 0.5 m. Gross error: the 20
    # values have mean 118.01 and s = 0.01·√(20/19) = 0.01026 m, below floor/3 = 0.01667 m,
    # so the score is |121.0 − 118.01| / 0.01667 = 179.4, beyond 3.
    window = np.array(calm)
    assert window.std(ddof=1) < 0.05 / 3
    score = abs(121.0 - window.mean()) / (0.05 / 3)
    assert round(score, 1) == 179.4
    assert out[-1].quality == "suspect"
    assert out[-1].reason == f"jump: +2.98 in 300 s (max 0.5); gross_error: {score:.1f} (pauta)"


def test_a_sensor_stuck_after_a_jump_is_counted_stuck_from_the_jump_on() -> None:
    # A transmitter fails and freezes at 20.0 m: the first two frozen readings are a jump
    # (not yet confirmed), the third confirms the new level. The stuck check sees all three,
    # so the sensor is stuck at the third reading, not two readings later.
    screen = Screen(make(jump={"max_step": 0.5, "confirm": 3}, stuck={"samples": 3}))
    out = screen.feed([18.0, 18.1, 18.2, 20.0, 20.0, 20.0])
    assert qualities(out) == ["good", "good", "good", "suspect", "suspect", "suspect"]
    assert out[3].reason == "jump: +1.8 in 300 s (max 0.5)"
    assert out[4].reason == "jump: +1.8 in 600 s (max 1)"
    assert out[5].reason == "stuck: unchanged for 3 readings"
    assert screen.states() == [("raised", "stuck")]
    assert screen.transitions[0].ts_ms == T0 + 5 * STEP
