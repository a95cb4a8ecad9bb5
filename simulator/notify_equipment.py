"""The notify section's equipment for ``edge simulate``: the 4G modem and the sirens' relays.

* a **simulated modem** (simulator/modem.py) on a pseudo-terminal at the configured
  ``notify.modem.port`` (a symlink, as the ``/dev/serial/by-id/...`` name of a real one):
  it answers the AT dialogue, logs every SMS it is asked to send (``simulator_sms_sent``,
  with the decoded text) and can deliver replies on schedule (``--sms-reply``), as a
  keeper's phone would;
* a **relay board** (simulator/relay.py) for every siren unit, served on the siren's bus
  beside the sensors; every switch is logged (``simulator_relay_switched``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from edge.config import GatewaySettings
from simulator.modem import SimulatedModem
from simulator.relay import RelayModule

log = structlog.get_logger("simulator.notify")

SENT_CHECK_S = 0.2


@dataclass(frozen=True)
class ScheduledReply:
    """A text a contact's phone sends to the gateway ``at_s`` after the simulator started."""

    at_s: float
    sender: str
    text: str


def parse_reply(spec: str) -> ScheduledReply:
    """``AT_S:FROM:TEXT``, e.g. ``40:+8613800000001:1``; ValueError naming what is wrong."""
    parts = spec.split(":", 2)
    if len(parts) != 3 or not parts[2]:
        raise ValueError(f"--sms-reply {spec!r}: use AT_S:FROM:TEXT, e.g. 40:+8613800000001:1")
    try:
        at_s = float(parts[0])
    except ValueError:
        raise ValueError(f"--sms-reply {spec!r}: {parts[0]!r} is not a number of "
                         "seconds") from None
    if at_s < 0:
        raise ValueError(f"--sms-reply {spec!r}: the time must not be negative")
    return ScheduledReply(at_s, parts[1], parts[2])


def relays_by_bus(settings: GatewaySettings) -> dict[str, list[RelayModule]]:
    """One relay board per (bus, unit) that a siren names."""
    boards: dict[tuple[str, int], RelayModule] = {}
    for siren in settings.notify.sirens if settings.notify else ():
        board = boards.get((siren.bus, siren.unit))
        if board is None:
            board = RelayModule(unit=siren.unit, channels=max(16, siren.coil + 1),
                                name=siren.id)
            boards[(siren.bus, siren.unit)] = board
        else:
            board.name = f"{board.name},{siren.id}"
    found: dict[str, list[RelayModule]] = {}
    for (bus, _), board in boards.items():
        found.setdefault(bus, []).append(board)
    return found


class ModemSim:
    """The site's modem for ``edge simulate``, and the replies it is to deliver."""

    def __init__(self, port: str, replies: Sequence[ScheduledReply] = (),
                 sms_log: Path | None = None) -> None:
        if Path(port).exists() and not Path(port).is_symlink():
            raise ValueError(f"{port} exists and is not a symlink: the simulator will not "
                             "replace a real modem (use a path such as /tmp/sim/modem)")
        self.modem = SimulatedModem(port)
        self.replies = sorted(replies, key=lambda r: r.at_s)
        self.sms_log = sms_log

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        self.modem.start()
        log.info("simulator_modem_serving", port=str(self.modem.link_path))
        seen = 0
        pending = list(self.replies)
        try:
            while True:
                texts = self.modem.sent
                for text in texts[seen:]:
                    if not text.complete:
                        break
                    seen += 1
                    self._record(text.destination, text.text, text.references)
                while pending and loop.time() - started >= pending[0].at_s:
                    reply = pending.pop(0)
                    self.modem.deliver(reply.sender, reply.text)
                    log.info("simulator_sms_delivered", sender=reply.sender, text=reply.text)
                await asyncio.sleep(SENT_CHECK_S)
        finally:
            self.modem.stop()

    def _record(self, destination: str, text: str, references: tuple[int, ...]) -> None:
        log.info("simulator_sms_sent", to=destination, text=text, references=list(references))
        if self.sms_log is not None:
            with self.sms_log.open("a", encoding="utf-8") as out:
                out.write(json.dumps({"to": destination, "text": text,
                                      "references": list(references)},
                                     ensure_ascii=False) + "\n")
