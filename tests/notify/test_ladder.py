"""The escalation ladder and the sirens' pattern, as pure functions of alarms and time."""

from __future__ import annotations

from typing import Any

from edge.channels.escalation import ACKED, CLEARED, Escalation, Ladder
from edge.channels.notify_config import SirenConfig, TierConfig
from edge.channels.sirens import desired

T0 = 1_780_000_000_000
MIN = 60_000


def ladder(all_clear: bool = True) -> Ladder:
    return Ladder([
        TierConfig(after_min=0, contacts=["keeper"], min_severity="warning"),
        TierConfig(after_min=10, contacts=["water-officer"], min_severity="alarm"),
        TierConfig(after_min=30, contacts=["grid-staff", "keeper"], min_severity="alarm"),
    ], all_clear)


def alarm(state: str, severity: str | None = "alarm", **extra: Any) -> dict[str, Any]:
    return {"id": "level-high@1", "rule": "level-high", "device": "level-1",
            "point": "water_level", "severity": severity, "state": state, "value": 125.0,
            "limit": 124.8, "ts": T0, "message": "m", **extra}


def raised(severity: str = "alarm", at: int = T0) -> tuple[Ladder, Escalation, list[Any]]:
    steps = ladder()
    escalation, notices = steps.take(None, alarm("raised", severity), at, lambda: "4821")
    assert escalation is not None
    return steps, escalation, notices


def test_the_first_tier_at_once_the_next_after_its_delay() -> None:
    steps, escalation, notices = raised()
    assert notices == [("keeper", "alarm")]
    assert escalation.code == "4821"
    assert escalation.next_due_ms == T0 + 10 * MIN
    assert steps.advance(escalation, T0 + 10 * MIN - 1) == []
    assert steps.advance(escalation, T0 + 10 * MIN) == [("water-officer", "alarm")]
    assert escalation.next_due_ms == T0 + 30 * MIN
    # The keeper of the third tier was told already: only the grid staff is added.
    assert steps.advance(escalation, T0 + 31 * MIN) == [("grid-staff", "alarm")]
    assert escalation.told == ["keeper", "water-officer", "grid-staff"]
    assert escalation.next_due_ms is None


def test_fractional_minutes_are_seconds() -> None:
    steps = Ladder([TierConfig(after_min=0, contacts=["a"]),
                    TierConfig(after_min=0.25, contacts=["b"])])
    escalation, _ = steps.take(None, alarm("raised"), T0, lambda: "1234")
    assert escalation is not None and escalation.next_due_ms == T0 + 15_000


def test_a_warning_stays_with_the_keeper_until_it_escalates() -> None:
    steps, escalation, notices = raised("warning")
    assert notices == [("keeper", "alarm")]
    assert steps.advance(escalation, T0 + 40 * MIN) == []  # both upper tiers are for alarms
    assert escalation.reached == 2
    _, notices = steps.take(escalation, alarm("escalated", "alarm"), T0 + 41 * MIN, str)
    # The keeper hears of the new severity; the tiers whose delay passed are added now.
    assert notices == [("keeper", "escalated"), ("water-officer", "alarm"),
                       ("grid-staff", "alarm")]
    assert escalation.ranks_ms == {"warning": T0, "alarm": T0 + 41 * MIN}


def test_an_acknowledgement_stops_the_climb() -> None:
    steps, escalation, _ = raised()
    _, notices = steps.take(escalation, alarm("acknowledged", by="王师傅", via="sms"),
                            T0 + MIN, str)
    assert notices == []
    assert escalation.state == ACKED
    assert (escalation.acked_by, escalation.acked_via) == ("王师傅", "sms")
    assert escalation.next_due_ms is None
    assert steps.advance(escalation, T0 + 60 * MIN) == []
    # A second acknowledgement changes nothing.
    assert steps.take(escalation, alarm("acknowledged", by="x"), T0 + 2 * MIN, str)[1] == []
    assert escalation.acked_by == "王师傅"


def test_clearing_tells_whoever_was_told() -> None:
    steps, escalation, _ = raised()
    steps.advance(escalation, T0 + 10 * MIN)
    steps.take(escalation, alarm("acknowledged"), T0 + 11 * MIN, str)
    _, notices = steps.take(escalation, alarm("cleared", value=123.4), T0 + 20 * MIN, str)
    assert notices == [("keeper", "clear"), ("water-officer", "clear")]
    assert escalation.state == CLEARED and escalation.value == 123.4
    assert steps.take(escalation, alarm("cleared"), T0 + 21 * MIN, str)[1] == []


def test_no_all_clear_when_switched_off() -> None:
    steps = ladder(all_clear=False)
    escalation, _ = steps.take(None, alarm("raised"), T0, str)
    assert steps.take(escalation, alarm("cleared"), T0 + MIN, str)[1] == []


def test_transitions_of_alarms_it_never_saw_raised() -> None:
    steps = ladder()
    assert steps.take(None, alarm("acknowledged"), T0, str) == (None, [])
    assert steps.take(None, alarm("cleared"), T0, str) == (None, [])
    # Raised before notify was configured, escalated since: it starts here.
    escalation, notices = steps.take(None, alarm("escalated", "critical"), T0, lambda: "2222")
    assert escalation is not None and notices == [("keeper", "alarm")]


def test_de_escalation_texts_nobody() -> None:
    steps, escalation, _ = raised("critical")
    _, notices = steps.take(escalation, alarm("de-escalated", "warning"), T0 + MIN, str)
    assert notices == []
    assert escalation.severity == "warning"


SIREN = SirenConfig(id="siren-1", bus="rs485-1", unit=9, coil=0, min_severity="alarm",
                    on_s=5, off_s=5, max_s=600)


def test_siren_pattern_on_and_off_until_the_maximum() -> None:
    _, escalation, _ = raised()
    assert desired(SIREN, [escalation], T0) == (True, ("level-high@1",), T0 + 5000)
    assert desired(SIREN, [escalation], T0 + 5000) == (False, ("level-high@1",), T0 + 10_000)
    assert desired(SIREN, [escalation], T0 + 12_000)[0] is True
    assert desired(SIREN, [escalation], T0 + 600_000) == (False, (), None)
    continuous = SIREN.model_copy(update={"off_s": 0})
    assert desired(continuous, [escalation], T0 + 7000) == (True, ("level-high@1",),
                                                            T0 + 600_000)


def test_siren_stays_off_below_its_severity_and_after_an_acknowledgement() -> None:
    steps, warning, _ = raised("warning")
    assert desired(SIREN, [warning], T0)[0] is False
    steps.take(warning, alarm("escalated", "alarm"), T0 + 1000, str)
    # It sounds from when the alarm reached the siren's severity, for max_s from then.
    assert desired(SIREN, [warning], T0 + 1000)[0] is True
    assert desired(SIREN, [warning], T0 + 600_999)[1] == ("level-high@1",)  # in an off phase
    assert desired(SIREN, [warning], T0 + 601_000)[1] == ()
    steps.take(warning, alarm("acknowledged"), T0 + 2000, str)
    assert desired(SIREN, [warning], T0 + 2000) == (False, (), None)


def test_equipment_alarms_do_not_sound_the_sirens() -> None:
    steps = ladder()
    relay, _ = steps.take(None, {**alarm("raised"), "id": "siren:siren-1@5",
                                 "rule": "siren:siren-1"}, T0, str)
    assert relay is not None
    assert desired(SIREN, [relay], T0)[0] is False
