"""Which poller serves which bus type.

Each bus type is served by one driver module; the daemon asks this registry for a poller
and talks to it only through the ``Poller`` protocol, so adding a bus type never touches
the daemon. A driver module is imported when the first bus of its type is built, so a
site without Modbus buses never loads pymodbus (about 2.5 MiB of RSS with its server and
simulator modules, which its PDU classes import), and one without serial text or GNSS
buses never loads their drivers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

from vocab.model import PollResult

if TYPE_CHECKING:
    from drivers.pollbase import BusHealth
    from edge.config import BusConfig, DeviceConfig

PollSink = Callable[[PollResult], Awaitable[None]]


class Poller(Protocol):
    """One task per bus: polls its devices and hands each result to the sink."""

    health: BusHealth

    async def run(self) -> None: ...

    def stop(self) -> None:
        """Finish the current device poll, then return from ``run``."""

    def poll_now(self) -> None:
        """Make every device of the bus due now (the ``inspect`` command)."""


def make_poller(bus: BusConfig, devices: list[DeviceConfig], sink: PollSink) -> Poller:
    if bus.type in ("modbus_tcp", "modbus_rtu"):
        from drivers.modbus import BusPoller

        return BusPoller(bus, devices, sink)
    if bus.type == "serial_line":
        from drivers.serial_line import SerialLinePoller

        return SerialLinePoller(bus, devices, sink)
    if bus.type == "nmea_gnss":
        from drivers.gnss import GnssPoller

        return GnssPoller(bus, devices, sink)
    raise ValueError(f"no driver for bus type {bus.type!r}")
