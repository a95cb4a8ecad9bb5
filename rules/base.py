"""What every rule type shares: its input (readings) and output (level decisions).

A rule looks at readings of its point and says which severity level, if any, the point
is at now. The alarm lifecycle (``rules.alarms``) turns changes of that level into
raised / escalated / de-escalated / cleared transitions, so rule types stay small and
never deal with persistence or publishing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from edge.model import Reading, Severity


@dataclass(frozen=True, slots=True)
class Verdict:
    """A rule's view of its point after one reading."""

    severity: Severity | None
    value: float | None
    limit: float | None
    # 'above' / 'below' / 'rate' ...: used to word the alarm message.
    direction: str = ""


class Rule(Protocol):
    id: str
    point: str

    def evaluate(self, reading: Reading) -> Verdict | None:
        """A verdict, or None when this reading cannot be judged (bad quality)."""
        ...
