"""What every rule type shares: its inputs (readings) and outputs (level decisions).

A rule looks at readings of its points and says which severity level, if any, a point is
at now (a ``Verdict``), or that it cannot say because its input is not trustworthy (a
``Stale`` note). The alarm lifecycle (``rules.alarms``) turns changes of level into
raised / escalated / de-escalated / cleared transitions, so rule types stay small and
never deal with persistence or publishing.

A ``Stale`` note deliberately changes nothing: an alarm raised on a level that is now
unknown (sensor offline, reading suspect) stays raised, and no alarm is raised on data
that cannot be trusted. Clearing an overtopping alarm because the level gauge went
quiet would be the worst possible reading of "no data".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from vocab.model import Reading, Severity

HistoryProvider = Callable[[str, int, int], Sequence[Reading]]
"""``history(point_ref, from_ms, to_ms)``: stored readings of a point, oldest first.

The store's ``Store.readings(device, point, from_ms, to_ms, limit)`` behind a closure;
the limit must be large enough for the longest history a rule asks for.
"""


@dataclass(frozen=True, slots=True)
class Verdict:
    """A rule's view of one of its alarm points after one reading."""

    severity: Severity | None
    value: float | None
    limit: float | None
    # 'above' / 'below' for limits; the condition ('offline', 'stuck', ...) for quality.
    direction: str = ""
    # The device/point the alarm is attached to, when not the reading's own (the window
    # sums of an accumulation rule alarm on their derived points).
    point: str | None = None
    # Unit of value and limit when they are not in the point's unit (m/h, r, ...).
    unit: str | None = None
    # What value is, for the message: '' (the point's value), 'rate', 'rainfall',
    # 'residual', 'correlation' or 'quality'.
    quantity: str = ""
    # Limits reached at >= (rainfall sums, as the CMA signals) rather than strictly.
    inclusive: bool = False


@dataclass(frozen=True, slots=True)
class Stale:
    """The rule could not judge: the alarm state is held and the reason recorded."""

    reason: str
    point: str | None = None


Judgement = Verdict | Stale


@dataclass(frozen=True, slots=True)
class RuleEnv:
    """What rules need to know about the site beyond their own configuration."""

    levels: Mapping[str, float]
    timezone: str
    # Poll interval (s) of every point a rule can name, derived points included.
    intervals_s: Mapping[str, float]
    units: Mapping[str, str]
    history: HistoryProvider | None = None

    def interval_s(self, point: str) -> float:
        return self.intervals_s.get(point, 60.0)

    def stale_after_ms(self, point: str, intervals: float = 3.0) -> int:
        """Age after which a point's latest reading no longer stands for 'now'."""
        return int(self.interval_s(point) * intervals * 1000)


@dataclass
class Context:
    """The engine's view of the present, handed to every rule evaluation of a poll."""

    now_ms: int
    latest: dict[str, Reading] = field(default_factory=dict)

    def current(self, point: str, max_age_ms: int) -> tuple[float | None, str | None]:
        """The point's latest good value, or None and why it cannot be used now."""
        reading = self.latest.get(point)
        if reading is None:
            return None, f"no_reading: {point}"
        problem = input_problem(reading)
        if problem is not None:
            return None, problem
        age = self.now_ms - reading.ts_ms
        if age > max_age_ms:
            return None, f"stale_input: {point} is {age / 1000:.0f} s old"
        return reading.value, None


def input_problem(reading: Reading) -> str | None:
    """Why a reading cannot be judged (quality and reason), or None when it can."""
    if reading.quality == "good" and reading.value is not None:
        return None
    quality = reading.quality if reading.quality != "good" else "bad"
    return f"{quality}_input: {reading.key} {reading.reason or 'no value'}"


class Rule(Protocol):
    """A configured rule as the engine drives it.

    ``inputs`` are the points whose readings the engine passes to ``judge``;
    ``alarm_points`` the points its alarms can be attached to (restored after a restart).
    """

    id: str
    point: str
    inputs: tuple[str, ...]
    alarm_points: tuple[str, ...]

    def judge(self, reading: Reading, ctx: Context) -> Sequence[Judgement]:
        """Verdicts or stale notes for one reading of one of ``inputs``."""
        ...

    def restore_alarm(self, point: str, severity: Severity, side: str) -> None:
        """Resume from an alarm the store kept active across a restart."""
        ...
