"""Poison messages: the one message a broker drops the connection on every time it arrives.

A broker over its ``max_packet_size`` (Mosquitto, RabbitMQ) does not refuse the message,
it closes the connection; paho then re-sends it first after the reconnect and the uplink
never moves again (lessons.md). A message is suspect when it is in flight at a
disconnect that comes within ``POISON_WINDOW_S`` of connecting; at ``POISON_DISCONNECTS``
such disconnects in a row it is named poison, and the channel sets it aside in the store
instead of re-sending it forever ahead of everything else.

Messages sent outside the outbox (health, command replies) are never re-sent, so they are
never poison, but one over a broker's limit drops the connection too. Such a drop must not
count against the telemetry in flight: counted, it named a small message poison that was
merely in flight when the health went over a 1,500-byte limit. A quick disconnect after an
outside message larger than everything in flight is put on that message
(``blamed_outside``) and counted against none.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

POISON_DISCONNECTS = 3
POISON_WINDOW_S = 5.0


class PoisonWatch:
    """Counts quick disconnects and names the message that causes them (loop only)."""

    def __init__(self) -> None:
        self._connected_at = 0.0
        # The largest message sent outside the outbox since the connect, and the one a
        # quick disconnect was put on.
        self._outside: tuple[str, int] | None = None
        self.blamed_outside: tuple[str, int] | None = None
        self._reported_outside: set[str] = set()  # topics said once each
        # (seqs in flight at each of the last quick disconnects, how many disconnects)
        self._suspect: tuple[set[int], int] | None = None

    def connected(self) -> None:
        self._connected_at = time.monotonic()
        self._outside = None
        self.blamed_outside = None

    def sent_outside(self, topic: str, size: int) -> None:
        """A message published outside the outbox: (topic, payload bytes)."""
        if self._outside is None or size > self._outside[1]:
            self._outside = (topic, size)

    def outside_to_report(self) -> tuple[str, int] | None:
        """The outside message the last disconnect was put on, the first time for its
        topic: said once, not at every health interval."""
        blamed = self.blamed_outside
        if blamed is None or blamed[0] in self._reported_outside:
            return None
        self._reported_outside.add(blamed[0])
        return blamed

    def forget(self) -> None:
        self._suspect = None

    def disconnected(self, inflight: Mapping[int, int], alarms: set[int],
                     sizes: Mapping[int, int]) -> tuple[int, int] | None:
        """``inflight`` maps paho mids to seqs. Returns (poison seq, disconnects) once a
        message is named, else None."""
        quick = time.monotonic() - self._connected_at < POISON_WINDOW_S
        if not quick:
            self._suspect = None
            return None
        largest = max((sizes.get(seq, 0) for seq in inflight.values()), default=0)
        if self._outside is not None and self._outside[1] > largest:
            self.blamed_outside = self._outside
            return None  # neither a count nor a reset: the next drop may be a poison's
        if not inflight:
            self._suspect = None
            return None
        # Alarms are never set aside: they are small (never over a broker's packet limit),
        # and a flapping link must not park one. Only telemetry can be poison.
        telemetry = {seq for seq in inflight.values() if seq not in alarms}
        if not telemetry or min(inflight.values()) in alarms:
            self._suspect = None
            return None
        # The poison message is in flight at every one of the quick disconnects; a small
        # message sent just before it may be too, when the broker drops the link before
        # its PUBACK is read. Of those in flight every time, the largest is the one a
        # broker refuses (over its max_packet_size), so that is the one set aside.
        candidates = telemetry & self._suspect[0] if self._suspect else telemetry
        count = self._suspect[1] + 1 if self._suspect and candidates else 1
        self._suspect = (candidates or telemetry, count)
        if count < POISON_DISCONNECTS:
            return None
        poison = max(self._suspect[0], key=lambda seq: (sizes.get(seq, 0), -seq))
        self._suspect = None
        return poison, count
