"""Multi-level limits with hysteresis, and on/off delays: the core of every limit rule.

Threshold, rate, rainfall-sum, HST-residual and correlation rules all compare a number
with a ladder of limits (warning < alarm < critical, above and/or below). Two practices
keep such alarms from flapping (domain reference §2.4, §3.1, §4):

* hysteresis: a level once reached is held until the value is back past its limit by a
  band (a level hovering at the flood limit must not raise and clear on every poll);
* delays: a new level must persist for N samples or a duration before it is taken
  (on-delay; "≥ 3 consecutive exceedances" of the HST confidence-interval method), and a
  lower level must persist before the alarm steps down (off-delay).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rules.configtypes import Delay
from vocab.model import SEVERITY_RANK, Severity

SEVERITY_BY_RANK: dict[int, Severity] = {1: "warning", 2: "alarm", 3: "critical"}


@dataclass(frozen=True, slots=True)
class Level:
    severity: Severity
    limit: float


@dataclass(frozen=True, slots=True)
class DelaySpec:
    samples: int | None = None
    seconds: float | None = None

    def met(self, run: Run, ts_ms: int) -> bool:
        if self.samples is not None:
            return run.count >= self.samples
        assert self.seconds is not None
        return ts_ms - run.start_ms >= self.seconds * 1000


@dataclass(frozen=True, slots=True)
class Run:
    """A run of consecutive samples sharing a condition: since when, and how many."""

    start_ms: int
    count: int

    def extended(self) -> Run:
        return Run(self.start_ms, self.count + 1)


class LimitLadder:
    """Which level a value is at, given the level currently held (for hysteresis)."""

    def __init__(self, high: Sequence[Level], low: Sequence[Level], hysteresis: float = 0.0,
                 *, inclusive: bool = False) -> None:
        self.high = sorted(high, key=lambda lv: SEVERITY_RANK[lv.severity])
        self.low = sorted(low, key=lambda lv: SEVERITY_RANK[lv.severity])
        self.hysteresis = hysteresis
        self.inclusive = inclusive

    @property
    def first_limit(self) -> float | None:
        """The limit quoted when no level is reached (the mildest one)."""
        if self.high:
            return self.high[0].limit
        return self.low[0].limit if self.low else None

    def limit_of(self, severity: Severity, side: str) -> float | None:
        levels = self.high if side == "above" else self.low
        return next((lv.limit for lv in levels if lv.severity == severity), None)

    def _beyond(self, value: float, limit: float, high: bool) -> bool:
        if self.inclusive:
            return value >= limit if high else value <= limit
        return value > limit if high else value < limit

    def _side_level(self, value: float, levels: Sequence[Level], high: bool,
                    held_rank: int) -> Level | None:
        found: Level | None = None
        for level in levels:
            rank = SEVERITY_RANK[level.severity]
            beyond = self._beyond(value, level.limit, high)
            # Holding a level (or a higher one) keeps it until the value is back past the
            # limit by the hysteresis band.
            kept = rank <= held_rank and (
                value > level.limit - self.hysteresis if high
                else value < level.limit + self.hysteresis
            )
            if (beyond or kept) and (found is None or rank > SEVERITY_RANK[found.severity]):
                found = level
        return found

    def target(self, value: float, held: Severity | None, held_side: str
               ) -> tuple[Level | None, str]:
        """The level ``value`` is at and its side ('above'/'below'), or (None, '')."""
        held_rank = SEVERITY_RANK[held] if held else 0
        above = self._side_level(value, self.high, True,
                                 held_rank if held_side == "above" else 0)
        below = self._side_level(value, self.low, False,
                                 held_rank if held_side == "below" else 0)
        if above and below and SEVERITY_RANK[below.severity] > SEVERITY_RANK[above.severity]:
            return below, "below"
        if above:
            return above, "above"
        if below:
            return below, "below"
        return None, ""


class Debounce:
    """Applies on/off delays to a stream of target levels, per severity level.

    A level r on a side is entered when the target has been at r or higher on that side
    for the on-delay; the alarm steps down to r when the target has been at r or lower
    for the off-delay. Tracking a run per level (not one run for "any change") means that
    warning, warning, alarm with a 3-sample on-delay gives a warning, not an alarm that
    was seen once. A change of side (above → below, or one quality condition to another)
    is a step down to nothing followed by a step up on the new side.
    """

    def __init__(self, on: DelaySpec | None = None, off: DelaySpec | None = None) -> None:
        self.on = on
        self.off = off
        self.rank = 0
        self.side = ""
        self._up: dict[tuple[str, int], Run] = {}
        self._down: dict[int, Run] = {}

    @property
    def severity(self) -> Severity | None:
        return SEVERITY_BY_RANK.get(self.rank)

    def restore(self, severity: Severity | None, side: str) -> None:
        self.rank = SEVERITY_RANK[severity] if severity else 0
        self.side = side if severity else ""
        self._up.clear()
        self._down.clear()

    def step(self, ts_ms: int, severity: Severity | None, side: str) -> tuple[int, str]:
        """Feed the level the value is at now; return the level in force (rank, side)."""
        rank = SEVERITY_RANK[severity] if severity else 0
        if self.on is None and self.off is None:
            self.rank, self.side = rank, side if rank else ""
            return self.rank, self.side

        self._up = {(side, r): self._up.get((side, r), Run(ts_ms, 0)).extended()
                    for r in range(1, rank + 1)}
        on_side = rank if side == self.side else 0
        self._down = {r: self._down.get(r, Run(ts_ms, 0)).extended()
                      for r in range(on_side, self.rank)}

        if self.rank and on_side < self.rank:
            # Runs of lower levels started no earlier than those of higher ones, so the
            # lowest satisfied level is the one the value has stayed at long enough.
            down = [r for r in range(on_side, self.rank)
                    if self.off is None or self.off.met(self._down[r], ts_ms)]
            if down:
                self._enter(min(down), self.side)
        if rank > self.rank and (self.rank == 0 or side == self.side):
            up = [r for r in range(self.rank + 1, rank + 1)
                  if self.on is None or self.on.met(self._up[(side, r)], ts_ms)]
            if up:
                self._enter(max(up), side)
        return self.rank, self.side

    def _enter(self, rank: int, side: str) -> None:
        if side != self.side:
            self._down.clear()
        self.rank, self.side = rank, side if rank else ""
        self._down = {r: run for r, run in self._down.items() if r < self.rank}


def debounce(on_delay: Delay | None, off_delay: Delay | None) -> Debounce:
    """The debounce of a rule's configured delays (none: every change is immediate)."""
    def spec(delay: Delay | None) -> DelaySpec | None:
        return None if delay is None else DelaySpec(delay.samples, delay.duration)

    return Debounce(spec(on_delay), spec(off_delay))
