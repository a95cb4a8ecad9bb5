"""The escalation ladder: who is told of an alarm, and when the next people are added.

District practice: an alarm goes at once to the people on duty (the reservoir keeper);
if nobody acknowledges it within a tier's delay, the next tier is added (the township
water officer, 水利员), then the next (the village grid staff, 网格员). A tier takes
alarms from its ``min_severity`` on, so a warning may stay with the keeper while an alarm
goes up the ladder. An acknowledgement, from anyone and by any path, stops the climb; a
cleared alarm sends a short all-clear to whoever was told.

Delays count from when the gateway took the alarm in (the tiers' clocks survive a
restart: they are stored with the escalation). A tier whose delay passed while the
alarm was below its severity is added as soon as the alarm escalates to it. This module
is pure: it changes ``Escalation`` records and says whom to text; edge/channels/
notify_store.py keeps them in the store.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from edge.channels.notify_config import TierConfig
from vocab.model import SEVERITY_RANK

# What a notification is about.
ALARM, ESCALATED, CLEAR, SUMMARY, TEST = "alarm", "escalated", "clear", "summary", "test"
ACTIVE, ACKED, CLEARED = "active", "acked", "cleared"


def is_equipment_alarm(rule: str) -> bool:
    """Alarms raised outside the rules (a relay that does not answer) have a ':' in their
    rule id, which no configured rule can have (rules/alarms.py ``is_external``)."""
    return ":" in rule


@dataclass
class Escalation:
    """One alarm's place on the ladder."""

    alarm_id: str
    rule: str
    device: str
    point: str
    severity: str
    code: str
    started_ms: int
    value: float | None = None
    limit: float | None = None
    ts_ms: int = 0
    message: str = ""
    state: str = ACTIVE
    reached: int = -1  # the last tier whose delay has passed (-1: none yet)
    next_due_ms: int | None = None
    told: list[str] = field(default_factory=list)  # contact ids, in the order told
    # When the alarm first reached each severity: sirens sound from their min_severity.
    ranks_ms: dict[str, int] = field(default_factory=dict)
    acked_by: str | None = None
    acked_via: str | None = None
    acked_ms: int | None = None
    ended_ms: int | None = None

    @property
    def pending(self) -> bool:
        return self.state == ACTIVE

    def qualified_ms(self, min_severity: str) -> int | None:
        """Since when this alarm has been at ``min_severity`` or above (None: never)."""
        floor = SEVERITY_RANK[min_severity]
        times = [t for sev, t in self.ranks_ms.items() if SEVERITY_RANK.get(sev, 0) >= floor]
        return min(times) if times else None


Notice = tuple[str, str]
"""(contact id, kind): one text to queue."""


class Ladder:
    """The configured tiers, applied to escalations."""

    def __init__(self, tiers: Sequence[TierConfig], all_clear: bool = True) -> None:
        self.tiers = list(tiers)
        self.all_clear = all_clear

    def due_ms(self, escalation: Escalation, tier: int) -> int:
        return escalation.started_ms + round(self.tiers[tier].after_min * 60_000)

    def advance(self, escalation: Escalation, now_ms: int) -> list[Notice]:
        """Reach the tiers whose delay has passed; the contacts to tell now."""
        tiers = self.tiers
        while escalation.reached + 1 < len(tiers) and \
                self.due_ms(escalation, escalation.reached + 1) <= now_ms:
            escalation.reached += 1
        new: list[str] = []
        if escalation.pending:
            rank = SEVERITY_RANK.get(escalation.severity, 0)
            for tier in tiers[: escalation.reached + 1]:
                if rank < SEVERITY_RANK[tier.min_severity]:
                    continue
                new += [c for c in tier.contacts if c not in escalation.told and c not in new]
        escalation.told += new
        following = escalation.reached + 1
        escalation.next_due_ms = self.due_ms(escalation, following) \
            if escalation.pending and following < len(tiers) else None
        return [(contact, ALARM) for contact in new]

    def take(self, escalation: Escalation | None, alarm: dict[str, Any], now_ms: int,
             code: Callable[[], str]) -> tuple[Escalation | None, list[Notice]]:
        """Apply one alarm transition (its ``alarm`` payload); the escalation it leaves
        (None: not one this ladder follows) and the texts it causes."""
        state = alarm.get("state")
        if escalation is None:
            if state not in ("raised", "escalated", "de-escalated"):
                return None, []  # acknowledged or cleared before notify knew it
            escalation = Escalation(alarm["id"], alarm["rule"], alarm["device"],
                                    alarm["point"], alarm["severity"], code(), now_ms)
            _update(escalation, alarm, now_ms)
            return escalation, self.advance(escalation, now_ms)
        if state in ("escalated", "de-escalated"):
            told = list(escalation.told) if escalation.pending else []
            _update(escalation, alarm, now_ms)
            if state == "de-escalated":
                self.advance(escalation, now_ms)
                return escalation, []
            # Those told already hear of the new severity; tiers it now reaches are added.
            return escalation, [(c, ESCALATED) for c in told] + self.advance(escalation,
                                                                               now_ms)
        if state == "acknowledged" and escalation.pending:
            escalation.state = ACKED
            escalation.acked_by = str(alarm.get("by") or "")
            escalation.acked_via = str(alarm.get("via") or "")
            escalation.acked_ms = alarm.get("ts", now_ms)
            escalation.ended_ms = now_ms
            escalation.next_due_ms = None
            return escalation, []
        if state == "cleared" and escalation.state != CLEARED:
            escalation.state = CLEARED
            escalation.value, escalation.ts_ms = alarm.get("value"), alarm.get("ts", now_ms)
            escalation.ended_ms = escalation.ended_ms or now_ms
            escalation.next_due_ms = None
            told = escalation.told if self.all_clear else []
            return escalation, [(c, CLEAR) for c in told]
        return escalation, []


def _update(escalation: Escalation, alarm: dict[str, Any], now_ms: int) -> None:
    escalation.severity = alarm.get("severity") or escalation.severity
    escalation.value = alarm.get("value")
    escalation.limit = alarm.get("limit")
    escalation.ts_ms = alarm.get("ts", now_ms)
    escalation.message = alarm.get("message", "")
    escalation.ranks_ms.setdefault(escalation.severity, now_ms)
