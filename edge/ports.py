"""What an optional part of the gateway is given, and what it must answer to.

SL 651 centres, notifications by SMS and siren, the keeper's page: each is a module that
declares a ``ServiceType``: the configuration section that switches it on, its outbox
channels and the kinds of message each takes, and a factory given the ``Ports``
of the gateway it may use. The gateway starts every configured one, restarts one whose
section changed on reload, stops them at shutdown and reports their health; adding one
is a module and a line in the table of edge/services.py.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from edge.buses import BusSupervisor
from edge.command_handlers import Inspection
from edge.config import GatewaySettings
from edge.outbox import Outbox
from edge.pipeline import Pipeline
from edge.store import StoreWorker


@dataclass(frozen=True)
class Ports:
    """What the gateway lends a service."""

    store: StoreWorker
    outbox: Outbox
    pipeline: Pipeline
    buses: BusSupervisor
    inspection: Inspection
    settings: Callable[[], GatewaySettings]
    # The health() of the MQTT channel and of every running service, by name: whether
    # each uplink is connected now (the keeper's page shows it).
    channel_health: Callable[[], Mapping[str, Mapping[str, Any]]] = field(
        default=lambda: {})


class Service(Protocol):
    name: str

    async def run(self) -> None:
        """Serve until stopped."""
        ...

    async def stop(self) -> None:
        """Finish what is under way (bounded), release what was opened."""
        ...

    def health(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class ServiceType:
    name: str
    # The configuration section that switches it on (None: off).
    section: Callable[[GatewaySettings], Any]
    # Its outbox channels and the kinds of message each takes (one per SL 651 centre,
    # say, each with its own place in the outbox); {} for a service that sends nothing.
    channels: Callable[[GatewaySettings], dict[str, tuple[str, ...]]]
    # Builds it; heavy libraries (aiohttp, the modem driver) are imported in here, so a
    # site that does not configure the service never loads them.
    build: Callable[[GatewaySettings, Ports], Service]
