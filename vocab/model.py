"""The typed records that flow between the daemon's stages.

drivers → ``Reading`` → store → rules → ``AlarmTransition`` → outbox → uplink. Each stage
takes and returns these records and nothing else, so a stage can be tested or replaced
without knowing another's internals.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

Quality = Literal["good", "suspect", "bad"]
Severity = Literal["warning", "alarm", "critical"]
AlarmState = Literal["raised", "escalated", "de-escalated", "cleared", "acknowledged"]

SEVERITY_RANK: dict[str, int] = {"warning": 1, "alarm": 2, "critical": 3}

# The reason of readings taken while the gateway's clock is before the release date:
# the value is real, the timestamp is not.
CLOCK_INVALID = "clock_invalid"

# The reason of a piezometer reading taken with the water below the sensor (domain
# reference §2.1): its value (the sensor's elevation, or a pressure at or below zero)
# bounds the water level from above but does not measure it. Such a reading is stored
# and published as ``bad`` with this reason, so that no limit, derived point or model
# takes it as a level; the quality rule still counts it as the sensor answering.
DRY = "dry"


def now_ms() -> int:
    """Wall-clock time in UTC epoch milliseconds: the timestamp of every reading."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class Reading:
    """One value of one point, stamped when it was acquired.

    ``value`` is the engineering value (None when the read failed); ``raw`` is the number
    decoded from the wire before scaling and calibration, kept so a wrong calibration can
    be corrected afterwards from the store.
    """

    device: str
    point: str
    ts_ms: int
    value: float | None
    unit: str
    quality: Quality
    raw: float | None = None
    reason: str | None = None

    @property
    def key(self) -> str:
        return f"{self.device}/{self.point}"

    @property
    def dry(self) -> bool:
        """A piezometer reading with the water below the sensor (reason ``dry``)."""
        # The calibration's flags are joined by ',' and reasons added later by '; '.
        return (self.reason is not None
                and self.reason.replace(",", ";").partition(";")[0].strip() == DRY)


@dataclass(frozen=True, slots=True)
class PollResult:
    """What one poll of one device produced: its readings and how the bus behaved."""

    bus: str
    device: str
    readings: tuple[Reading, ...]
    requests: int
    ok: bool
    error: str | None = None
    # More devices of the same round on this bus are still due in this burst: the
    # pipeline may hold its commit window open until the round is done.
    mid_round: bool = False


@dataclass(frozen=True, slots=True)
class AlarmTransition:
    """A change of an alarm's state, as stored and published on ``alarms``."""

    alarm_id: str
    rule: str
    device: str
    point: str
    severity: Severity | None
    state: AlarmState
    value: float | None
    limit: float | None
    ts_ms: int
    message: str
    side: str = ""  # 'above' / 'below': which side of the limit, kept to resume after restart
    extra: dict[str, float | str | None] = field(default_factory=dict)


@dataclass(slots=True)
class ActiveAlarm:
    """An alarm that has been raised and not cleared: as the alarm book keeps it while
    rules judge, and as the store keeps it across restarts.

    Mutable on purpose: escalation changes its severity, side and limit in place, and
    acknowledgement its flag; the alarm id stays.
    """

    alarm_id: str
    rule: str
    device: str
    point: str
    severity: Severity
    side: str
    limit: float | None
    acked: bool = False
    state: AlarmState = "raised"
    raised_ms: int = 0
    updated_ms: int = 0
    value: float | None = None
    message: str = ""
    acked_by: str | None = None  # who acknowledged ("" when nobody was named)
    acked_via: str | None = None  # how: mqtt, sms, page, button

    @property
    def key(self) -> str:
        return f"{self.device}/{self.point}"
