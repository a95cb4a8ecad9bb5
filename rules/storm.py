"""Alarm-storm control: pace the release of transitions without losing any.

When a bus fails, fifty points go offline in one poll; when a flood arrives, every level,
rate, rainfall and seepage rule fires within minutes. Each transition is a message to the
platform and usually an SMS to the keeper, and a flood of them hides the one that
matters. So transitions beyond a burst are queued here and released at a steady rate,
most severe first, each with its original time stamp; none is dropped or merged.

* Transitions of one alarm keep their order (a queued raise is never overtaken by its
  own clear).
* Critical transitions are never held back: they go out at once, together with anything
  of the same alarm still queued before them.
* Nothing waits longer than ``max_delay_s``: pacing smooths a burst, but a condition
  that keeps flapping faster than the pace must not build an ever longer backlog.
* The rate is measured on the readings' clock, so it is deterministic and testable.

Queued transitions are not yet stored; an owner that discards the engine (shutdown,
configuration reload) calls ``drain`` first and stores what it returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vocab.model import SEVERITY_RANK, AlarmTransition

# Raising and escalating tell the keeper to act; stepping down and clearing can wait.
_STATE_URGENCY = {"raised": 2, "escalated": 2, "de-escalated": 1, "cleared": 0,
                  "acknowledged": 0}


def urgency(t: AlarmTransition) -> tuple[int, int]:
    return (_STATE_URGENCY.get(t.state, 0), SEVERITY_RANK.get(t.severity or "", 0))


@dataclass
class StormLimiter:
    burst: int = 20
    per_minute: float = 20.0
    max_delay_s: float = 300.0
    tokens: float = field(init=False)
    clock_ms: int | None = field(default=None, init=False)
    # (arrival number, transition), in arrival order.
    queue: list[tuple[int, AlarmTransition]] = field(default_factory=list, init=False)
    arrivals: int = field(default=0, init=False)
    # Clock at which each arrival number was queued.
    queued_at: dict[int, int] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        if self.burst < 1 or self.per_minute <= 0 or self.max_delay_s < 0:
            raise ValueError("storm limits must allow at least one transition")
        self.tokens = float(self.burst)

    @property
    def pending(self) -> int:
        return len(self.queue)

    def holds(self, alarm_id: str) -> bool:
        return any(t.alarm_id == alarm_id for _, t in self.queue)

    def _refill(self, now_ms: int) -> None:
        if self.clock_ms is not None and now_ms > self.clock_ms:
            gained = (now_ms - self.clock_ms) / 60_000 * self.per_minute
            self.tokens = min(float(self.burst), self.tokens + gained)
        if self.clock_ms is None or now_ms > self.clock_ms:
            self.clock_ms = now_ms

    def _next(self) -> AlarmTransition:
        """Remove and return the most urgent head of an alarm's queue (FIFO on ties)."""
        heads: dict[str, tuple[int, AlarmTransition]] = {}
        for entry in self.queue:
            heads.setdefault(entry[1].alarm_id, entry)
        chosen = max(heads.values(), key=lambda e: (urgency(e[1]), -e[0]))
        return self._remove(chosen)

    def _remove(self, entry: tuple[int, AlarmTransition]) -> AlarmTransition:
        self.queue.remove(entry)
        self.queued_at.pop(entry[0], None)
        return entry[1]

    def submit(self, transitions: list[AlarmTransition], now_ms: int) -> list[AlarmTransition]:
        """Queue this poll's transitions; return those released now, in release order."""
        self._refill(now_ms)
        for t in transitions:
            self.queue.append((self.arrivals, t))
            self.queued_at[self.arrivals] = now_ms
            self.arrivals += 1
        released: list[AlarmTransition] = []
        critical = [e for e in self.queue
                    if e[1].severity == "critical" and e[1].state in ("raised", "escalated")]
        for number, t in critical:
            # Unpaced, with the alarm's earlier queued transitions so its order holds.
            through = [e for e in self.queue if e[1].alarm_id == t.alarm_id and e[0] <= number]
            released += [self._remove(entry) for entry in through]
        # Overdue transitions leave in arrival order, which keeps each alarm's order.
        overdue = now_ms - self.max_delay_s * 1000
        released += [self._remove(e) for e in list(self.queue) if self.queued_at[e[0]] <= overdue]
        while self.queue and self.tokens >= 1.0:
            released.append(self._next())
            self.tokens -= 1.0
        return released

    def drain(self) -> list[AlarmTransition]:
        """Everything still queued, in the order it would have been released."""
        return [self._next() for _ in range(len(self.queue))]
