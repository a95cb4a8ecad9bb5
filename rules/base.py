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

import datetime as dt
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, get_args, runtime_checkable
from zoneinfo import ZoneInfo

from rules.configtypes import Limit
from vocab.checking import PathKey, Report
from vocab.configbase import StrictModel
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
    # Where rules run blocking work (model fits over years of history) so the event
    # loop and every bus keep their schedule; None runs it inline (tests, tools).
    worker: Executor | None = None
    # The site's rule configs by id: a rule may take a figure from another (the lag a
    # seepage-versus-level rule shares with a lag-correlation rule).
    rules: Mapping[str, Any] = field(default_factory=dict)

    def interval_s(self, point: str) -> float:
        return self.intervals_s.get(point, 60.0)

    def stale_after_ms(self, point: str, intervals: float = 3.0) -> int:
        """Age after which a point's latest reading no longer stands for 'now'."""
        return int(self.interval_s(point) * intervals * 1000)

    @property
    def offset_ms(self) -> int:
        """The site's offset from UTC, for bins aligned to local midnight."""
        return standard_offset_ms(self.timezone)


def standard_offset_ms(timezone: str) -> int:
    """A time zone's standard offset from UTC in ms (its offset on 1 January 2000).

    Daily bins of the statistical rules start at local midnight. A fixed offset is
    right for dam sites, which report in standard time (Beijing time has no daylight
    saving, domain reference §0), and it keeps every bin 24 h long.
    """
    offset = ZoneInfo(timezone).utcoffset(dt.datetime(2000, 1, 1))
    return int(offset.total_seconds() * 1000) if offset else 0


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
    if reading.dry:
        # Stored as bad; also caught when an older store kept it good (before dry
        # readings were marked bad), so no history read back takes it as a level.
        return f"dry_input: {reading.key} (water below the sensor)"
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


class Producer(Protocol):
    """A rule that publishes derived readings (rainfall sums, potential, forecasts).

    The engine runs it, before the rules judge, on each new reading of ``source``; what it
    publishes is screened and judged like any reading. Other points it reads come from
    the context's latest readings.
    """

    id: str
    source: str

    def produce(self, reading: Reading, ctx: Context) -> list[Reading]: ...


@runtime_checkable
class Screen(Protocol):
    """A rule that re-qualifies readings before anything else sees them (quality)."""

    id: str
    point: str

    def screen(self, reading: Reading) -> tuple[Reading, Sequence[Judgement]]: ...

    def check_offline(self, now_ms: int) -> Sequence[Judgement]: ...

    def offline_due_ms(self) -> int | None:
        """When ``check_offline`` may first judge again (None: not before a reading)."""
        ...


# --- what a rule type declares -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PointInfo:
    """What the checks of a rule may ask about a device's point."""

    quantity: str
    unit: str
    # The point is a tipping-bucket counter converted to rain increments in mm.
    counts_rain: bool = False


@dataclass(frozen=True)
class SiteView:
    """The rest of the site as a rule's checks see it (built by the configuration)."""

    points: Mapping[str, PointInfo]  # the devices' points
    known: frozenset[str]  # every point a rule may name: devices', derived, sums
    units: Mapping[str, str]  # of every known point
    levels: Mapping[str, float]  # site.levels
    retention_s: float  # how far back the store keeps readings
    rules: Mapping[str, Any] = field(default_factory=dict)  # the rule configs by id

    def level_names(self) -> str:
        return ", ".join(self.levels) or "none defined"


class RuleShape:
    """What the generic checks (rules/checks.py) ask of every rule type's config model.

    Mixed into each rule config model. The defaults fit a rule on one ``point`` with
    ``high``/``low`` limits; a rule type overrides what differs, and puts anything only
    it must check in ``check``.
    """

    if TYPE_CHECKING:  # fields of the model this is mixed into
        id: str
        point: str

    def read_points(self) -> list[tuple[PathKey, str]]:
        """(key path, point) of every point the rule reads: each must exist."""
        return [(("point",), self.point)]

    def limits(self) -> Iterator[tuple[PathKey, Limit]]:
        """(key path, limit) of every limit: a named site level must exist."""
        for side in ("high", "low"):
            for index, limit in enumerate(getattr(self, side, None) or []):
                yield (side, index), limit

    def level_refs(self) -> Iterator[tuple[PathKey, str]]:
        """(key path, name) of site levels named outside ``limits``."""
        return iter(())

    def history_needs(self) -> Iterator[tuple[PathKey, float]]:
        """(key path, seconds) of stored history the rule reads back."""
        return iter(())

    def outputs(self) -> list[str]:
        """Keys of the derived readings the rule publishes (rainfall sums...)."""
        return []

    def output_unit(self) -> str:
        return ""

    def output_units(self) -> dict[str, str]:
        """Unit of each published reading; by default all in ``output_unit``."""
        return dict.fromkeys(self.outputs(), self.output_unit())

    def check(self, site: SiteView, report: Report) -> None:
        """Checks only this rule type needs; paths relative to the rule."""


@dataclass(frozen=True)
class RuleType:
    """One entry of the rule-type table (rules/registry.py): its config model (a
    ``StrictModel`` and ``RuleShape`` with ``type: Literal[...]``) and its factory."""

    config: type[StrictModel]
    build: Callable[[Any, RuleEnv], Any]

    @property
    def name(self) -> str:
        # By contract the model's ``type`` is a Literal of the one name.
        return str(get_args(self.config.model_fields["type"].annotation)[0])


@dataclass(frozen=True)
class RuleSite:
    """What the rule engine is built from: the site's rules and what they need of it."""

    language: str
    timezone: str
    levels: Mapping[str, float]
    rules: Sequence[Any]  # rule config models
    derived: Sequence[Any]  # DerivedPointConfig
    # Every device point: (poll interval in s, unit).
    points: Mapping[str, tuple[float, str]]
