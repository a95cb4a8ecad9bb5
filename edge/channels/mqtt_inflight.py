"""The in-flight deadline: notice a broker that keeps the link up but never acknowledges.

A broker (or a proxy before it) can answer every PINGREQ and never send a PUBACK; paho's
keep-alive is then satisfied and the outbox waits forever. Each message handed to paho
gets the time it was sent; one that waits longer than the deadline stalls the uplink
(Telegraf's MQTT output bounds each publish by a timeout in the same way).
"""

from __future__ import annotations

import time


class InflightClock:
    """When each in-flight message (paho mid) was last sent, on the monotonic clock."""

    def __init__(self, deadline_s: float) -> None:
        self.deadline_s = deadline_s
        self._sent: dict[int, float] = {}

    def sent(self, mid: int) -> None:
        self._sent[mid] = time.monotonic()

    def acknowledged(self, mid: int) -> None:
        self._sent.pop(mid, None)

    def resent(self) -> None:
        """A new connection: paho sends every unacknowledged message again, so each one's
        wait starts over."""
        now = time.monotonic()
        for mid in self._sent:
            self._sent[mid] = now

    def clear(self) -> None:
        self._sent.clear()

    def overdue_s(self) -> float | None:
        """How long the oldest message has waited, if past the deadline; else None."""
        if not self._sent:
            return None
        waited = time.monotonic() - min(self._sent.values())
        return waited if waited > self.deadline_s else None

    def check_every_s(self) -> float:
        """How often to look: a few times per deadline, at most once a second."""
        return min(1.0, self.deadline_s / 4)
