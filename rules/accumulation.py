"""Accumulation rule: rainfall sums over windows, the rainfall day and events, with limits.

Models the rainfall practice of the domain reference §2.3 and the rainstorm rules of §4:
sums over 1, 3, 6, 12 and 24 h on half-open windows (t − W, t] of increments stamped at
the end of their counting interval; the rainfall day 08:00–08:00 local time; event totals
ended by a dry gap; limits such as short-duration heavy rain (1 h ≥ 20 mm) and the CMA
rainstorm signals (3 h ≥ 50 / ≥ 100 mm, 6 h ≥ 50 mm, 12 h ≥ 50 mm). Rainfall limits are
reached at ≥, as the signals are defined, not strictly exceeded.

The point's readings must be rain increments in mm (a tipping-bucket point with
``tipping_bucket`` configured, or a logger's interval sums). The current sums are
published as derived readings of a virtual device (``device``, default the rule id):
``{device}/rain_1h``, ``rain_3h``, ..., ``rain_day`` (the rainfall day so far; at each
day's end also its total, stamped at the end) and ``rain_event`` (0 between events).
Other rules and derived points can use them like any point.

A sum is only complete if the gauge reported throughout its window. Where a window holds
missing data (gauge offline, a counter reset, the start of observation), its reading is
``suspect`` with the reason, and its alarm may still be raised or escalated (the rain
counted is certain, so the true sum is at least that) but is never lowered or cleared:
an outage must not end a rainstorm alarm. With a history provider the sums are rebuilt
from the store at start, so a restart does not forget the last day's rain.

```yaml
- id: rain
  type: accumulation
  point: gauge-1/rain
  windows:
    - {window: 1h, high: [{severity: warning, value: 20}]}
    - {window: 3h, high: [{severity: alarm, value: 50}, {severity: critical, value: 100}]}
    - {window: 6h, high: [{severity: alarm, value: 50}]}
    - {window: 12h, high: [{severity: warning, value: 50}]}
    - {window: 24h}
  day: {start_hour: 8}
  event: {dry_gap: 6h, high: [{severity: warning, value: 80}]}
```
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from rules.base import (
    Context,
    HistoryProvider,
    Judgement,
    RuleEnv,
    RuleShape,
    RuleType,
    SiteView,
    Stale,
    Verdict,
)
from rules.configtypes import Limit, unique_severities
from rules.rainfall import DEFAULT_WINDOWS_S, RainfallDay, RainfallEvents, RainfallWindows
from rules.threshold import LimitJudge, limit_judge
from vocab.checking import PathKey, Report
from vocab.configbase import StrictModel
from vocab.durations import Duration, format_duration
from vocab.ids import Ident, PointRef
from vocab.model import SEVERITY_RANK, Quality, Reading, Severity

__all__ = ["AccumulationConfig", "AccumulationRule", "build"]

HOUR_MS = 3_600_000


class _Limited(StrictModel):
    high: list[Limit] = Field(default_factory=list)

    @field_validator("high")
    @classmethod
    def _one_per_severity(cls, limits: list[Limit], info: ValidationInfo) -> list[Limit]:
        return unique_severities(limits, info.field_name or "")


class WindowSum(_Limited):
    window: Duration
    # Point id of the sum; default rain_<window>, e.g. rain_3h.
    name: Ident | None = None

    @field_validator("window")
    @classmethod
    def _whole_seconds(cls, seconds: float) -> float:
        if seconds != int(seconds):
            raise ValueError("a rainfall window is a whole number of seconds")
        return seconds

    @property
    def point_id(self) -> str:
        return self.name or f"rain_{format_duration(self.window)}"


class DaySum(_Limited):
    start_hour: int = Field(default=8, ge=0, le=23)
    name: Ident = "rain_day"


class EventSum(_Limited):
    dry_gap: Duration
    name: Ident = "rain_event"


def _standard_windows() -> list[WindowSum]:
    return [WindowSum(window=w) for w in DEFAULT_WINDOWS_S]


class AccumulationConfig(StrictModel, RuleShape):
    id: Ident
    type: Literal["accumulation"]
    point: PointRef
    # Virtual device of the published sums; default: the rule id.
    device: Ident | None = None
    windows: list[WindowSum] = Field(default_factory=_standard_windows)
    day: DaySum | None = Field(default_factory=DaySum)
    event: EventSum | None = None
    hysteresis: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _distinct(self) -> AccumulationConfig:
        names = self.output_ids()
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"two sums named {', '.join(repeated)}: give them distinct names")
        return self

    @property
    def virtual_device(self) -> str:
        return self.device or self.id

    def output_ids(self) -> list[str]:
        names = [w.point_id for w in self.windows]
        if self.day is not None:
            names.append(self.day.name)
        if self.event is not None:
            names.append(self.event.name)
        return names

    def outputs(self) -> list[str]:
        """The keys of the derived readings this rule publishes."""
        return [f"{self.virtual_device}/{name}" for name in self.output_ids()]

    def output_unit(self) -> str:
        return "mm"

    def limits(self) -> Iterator[tuple[PathKey, Limit]]:
        for w_index, window in enumerate(self.windows):
            for index, limit in enumerate(window.high):
                yield ("windows", w_index, "high", index), limit
        for part in ("day", "event"):
            section = getattr(self, part)
            for index, limit in enumerate(section.high if section else []):
                yield (part, "high", index), limit

    def history_needs(self) -> Iterator[tuple[PathKey, float]]:
        for index, window in enumerate(self.windows):
            yield ("windows", index, "window"), window.window

    def check(self, site: SiteView, report: Report) -> None:
        point = site.points.get(self.point)
        if point is None:
            return
        if point.quantity == "rainfall_counter" and not point.counts_rain:
            report(("point",), f"rule {self.id!r}: point {self.point!r} is a raw pulse "
                               "counter; accumulation needs rain increments in mm (configure "
                               "tipping_bucket on the point)")
        elif point.quantity not in ("rainfall", "rainfall_counter"):
            report(("point",), f"rule {self.id!r}: point {self.point!r} measures "
                               f"{point.quantity}, not rainfall")


class AccumulationRule:
    """Producer of the sums (before the rules run) and judge of their limits."""

    def __init__(self, config: AccumulationConfig, env: RuleEnv) -> None:
        self.id = config.id
        self.point = config.point
        self.source = config.point
        self.device = config.virtual_device
        self.windows = [(w, f"{self.device}/{w.point_id}") for w in config.windows]
        self.sums = RainfallWindows([int(w.window) for w in config.windows] or [3600])
        self.day_config = config.day
        self.day = RainfallDay(env.timezone, config.day.start_hour) if config.day else None
        self.event_config = config.event
        self.events = RainfallEvents(int(config.event.dry_gap)) if config.event else None
        self.outputs = tuple(config.outputs())
        self.inputs = self.outputs
        self.limits: dict[str, LimitJudge] = {}
        for limited, key in self._limited(config):
            if limited.high:
                self.limits[key] = limit_judge(limited.high, [], config.hysteresis, env,
                                               inclusive=True)
        self.alarm_points = tuple(self.limits)
        self.interval_ms = int(env.interval_s(config.point) * 1000)
        longest = max([w.window for w in config.windows] + [25 * 3600.0])
        if config.event is not None:
            longest = max(longest, config.event.dry_gap)
        self.horizon_ms = int(longest * 1000)
        self.history: HistoryProvider | None = env.history
        # Stamp of the latest reading after which rain may be missing (a gap, a reset, the
        # start of observation): sums over windows reaching back past it are incomplete.
        self.last_gap_ms: int | None = None
        self.after_gap = False

    def _limited(self, config: AccumulationConfig) -> list[tuple[_Limited, str]]:
        pairs: list[tuple[_Limited, str]] = [(w, key) for w, key in self.windows]
        if config.day is not None:
            pairs.append((config.day, f"{self.device}/{config.day.name}"))
        if config.event is not None:
            pairs.append((config.event, f"{self.device}/{config.event.name}"))
        return pairs

    def restore_alarm(self, point: str, severity: Severity, side: str) -> None:
        if point in self.limits:
            self.limits[point].restore(severity, side)

    # --- producing the sums ------------------------------------------------------------

    def _gap(self, ts_ms: int) -> None:
        self.last_gap_ms = ts_ms if self.last_gap_ms is None else max(self.last_gap_ms, ts_ms)

    def _ingest(self, reading: Reading) -> Reading | None:
        """Take one increment; return the closed rainfall day's total, if one closed."""
        ts, value = reading.ts_ms, reading.value
        if self.last_gap_ms is None:
            self._gap(ts)  # nothing is known before the first reading
        if value is None or reading.quality == "bad" or value < 0:
            self._gap(ts)
            self.after_gap = True
            if self.events is not None:
                self.events.advance(ts)
            return None
        if self.after_gap or reading.quality == "suspect":
            # The first increment after a gap may hold the gap's rain, or have lost it
            # (a counter reset): either way its window start is uncertain.
            self._gap(ts)
            self.after_gap = False
        self.sums.add(ts, value)
        if self.events is not None:
            self.events.add(ts, value)
        if self.day is None:
            return None
        closed = self.day.add(ts, value)
        if closed is None or closed.end_ms == ts:
            return None
        assert self.day_config is not None
        # The day's total stamped at its end, so the series holds every day's value at
        # 08:00 even when no poll falls exactly on it.
        return self._reading(self.day_config.name, closed.end_ms, closed.total_mm,
                             self._day_gap(closed.start_ms, closed.end_ms))

    def _day_gap(self, start_ms: int, end_ms: int) -> str | None:
        if self.last_gap_ms is not None and self.last_gap_ms > start_ms:
            return self._gap_reason(end_ms)
        return None

    def _gap_reason(self, ts_ms: int) -> str:
        assert self.last_gap_ms is not None
        # The start of observation counts as a gap: nothing is known before it.
        return f"incomplete: gauge data gap {(ts_ms - self.last_gap_ms) / 1000:.0f} s ago"

    def _reading(self, name: str, ts_ms: int, mm: float, incomplete: str | None) -> Reading:
        quality: Quality = "suspect" if incomplete else "good"
        return Reading(self.device, name, ts_ms, mm, "mm", quality, None, incomplete)

    def produce(self, reading: Reading, ctx: Context) -> list[Reading]:
        """The sums after one reading of the gauge, as derived readings."""
        ts = reading.ts_ms
        if self.history is not None:
            # Once, at the first reading: rebuild the sums from what the store kept.
            margin = 2 * self.interval_ms
            for stored in self.history(self.source, ts - self.horizon_ms - margin, ts - 1):
                self._ingest(stored)
            self.history = None
        out: list[Reading] = []
        closed_day = self._ingest(reading)
        if closed_day is not None:
            out.append(closed_day)
        gap = self.last_gap_ms if self.last_gap_ms is not None else ts
        sums = self.sums.sums(ts)
        for window, key in self.windows:
            incomplete = self._gap_reason(ts) if gap > ts - window.window * 1000 else None
            out.append(self._reading(key.split("/", 1)[1], ts, sums[int(window.window)],
                                     incomplete))
        if self.day is not None and self.day_config is not None:
            current = self.day.current
            total = current.total_mm if current is not None else 0.0
            start = current.start_ms if current is not None else ts
            out.append(self._reading(self.day_config.name, ts, total,
                                     self._gap_reason(ts) if gap > start else None))
        if self.events is not None and self.event_config is not None:
            event = self.events.current
            gap_ms = int(self.event_config.dry_gap * 1000)
            # An open event may have begun before the gap; between events, "0 mm" needs a
            # whole dry gap of known weather behind it.
            since = event.start_ms - gap_ms if event is not None else ts - gap_ms
            out.append(self._reading(self.event_config.name, ts,
                                     event.total_mm if event is not None else 0.0,
                                     self._gap_reason(ts) if gap > since else None))
        return out

    # --- judging the sums --------------------------------------------------------------

    def judge(self, reading: Reading, ctx: Context) -> Sequence[Judgement]:
        judge = self.limits.get(reading.key)
        if judge is None or reading.value is None:
            return []
        value = reading.value
        if reading.quality != "good":
            target, _ = judge.ladder.target(value, judge.held, judge.held_side)
            held_rank = SEVERITY_RANK[judge.held] if judge.held else 0
            if target is None or SEVERITY_RANK[target.severity] <= held_rank:
                return [Stale(reading.reason or "incomplete", reading.key)]
        severity, side, limit = judge.step(reading.ts_ms, value)
        return [Verdict(severity, value, limit, side, point=reading.key, unit="mm",
                        quantity="rainfall", inclusive=True)]


def build(config: AccumulationConfig, env: RuleEnv) -> AccumulationRule:
    return AccumulationRule(config, env)


RULE_TYPE = RuleType(AccumulationConfig, build)
