"""Threshold rule: multi-level high/low limits with hysteresis.

Models the basic practice of reservoir alarming (domain reference §4): a water level above
the flood-limit level (strictly: 超汛限 means level > 汛限水位), escalating at the design
and check flood levels; or a level below the dead level. A value hovering at a limit
must not flap, so once a level is reached it is held until the value falls back past the
limit by ``hysteresis``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from edge.model import SEVERITY_RANK, Reading, Severity
from rules.base import Verdict


@dataclass(frozen=True, slots=True)
class Level:
    severity: Severity
    limit: float


class ThresholdRule:
    def __init__(self, rule_id: str, point: str, high: Sequence[Level], low: Sequence[Level],
                 hysteresis: float) -> None:
        self.id = rule_id
        self.point = point
        self.high = sorted(high, key=lambda lv: SEVERITY_RANK[lv.severity])
        self.low = sorted(low, key=lambda lv: SEVERITY_RANK[lv.severity])
        self.hysteresis = hysteresis
        self.held: Severity | None = None
        self.held_side = ""

    def restore(self, severity: Severity | None, side: str) -> None:
        """Resume from a persisted active alarm after a restart."""
        self.held = severity
        self.held_side = side

    def _side_level(self, value: float, levels: Sequence[Level], high: bool) -> Level | None:
        held_rank = SEVERITY_RANK[self.held] if self.held and self.held_side == (
            "above" if high else "below") else 0
        found: Level | None = None
        for level in levels:
            rank = SEVERITY_RANK[level.severity]
            beyond = value > level.limit if high else value < level.limit
            # Holding a level (or a higher one) keeps it until the value is back past the
            # limit by the hysteresis band.
            kept = rank <= held_rank and (
                value > level.limit - self.hysteresis if high
                else value < level.limit + self.hysteresis
            )
            if (beyond or kept) and (found is None or rank > SEVERITY_RANK[found.severity]):
                found = level
        return found

    def evaluate(self, reading: Reading) -> Verdict | None:
        if reading.quality != "good" or reading.value is None:
            return None
        value = reading.value
        above = self._side_level(value, self.high, True)
        below = self._side_level(value, self.low, False)
        chosen, side = (above, "above") if above else (below, "below")
        if above and below and SEVERITY_RANK[below.severity] > SEVERITY_RANK[above.severity]:
            chosen, side = below, "below"
        if chosen is None:
            self.held, self.held_side = None, ""
            limit = self.high[0].limit if self.high else (self.low[0].limit if self.low else None)
            return Verdict(None, value, limit)
        self.held, self.held_side = chosen.severity, side
        return Verdict(chosen.severity, value, chosen.limit, side)
