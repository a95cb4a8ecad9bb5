"""The keeper's page as one of the gateway's optional services (edge/ports.py).

Switched on by the site file's ``web:`` section (issue #17). It sends nothing through the
outbox; it serves the page (edge/web/app.py) on the daemon's loop from a ``KeeperPort``
on the running gateway (edge/web/keeper_port.py). aiohttp and the pages are imported in
``build``, so a gateway without ``web:`` never loads them (about 13 MiB and 0.15 s,
docs/web.md; tests/rules/test_footprint.py checks it).

Its health (in the gateway's health topic under ``channels.web``) counts requests,
refusals (4xx, malformed requests), wrong PINs and lock-outs, and failures (5xx).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import structlog

from edge.config import GatewaySettings
from edge.ports import Ports, ServiceType
from edge.web.config import WebConfig

if TYPE_CHECKING:
    from edge.web.app import KeeperWeb
    from edge.web.keeper_port import DaemonKeeper

__all__ = ["SERVICE_TYPE", "KeeperPage", "build"]

log = structlog.get_logger("edge.web")


class KeeperPage:
    """The page's life in the gateway: start on the loop, serve, stop at exit or reload."""

    name = "web"

    def __init__(self, config: WebConfig, keeper: DaemonKeeper, server: KeeperWeb) -> None:
        self.config = config
        self.keeper = keeper
        self.server = server
        self._stopped = asyncio.Event()

    async def run(self) -> None:
        if self._stopped.is_set():
            return
        await self.server.start()  # a busy or absent address is retried in the background
        if self._stopped.is_set():  # stopped while it started
            await self.server.stop()
            return
        await self._stopped.wait()

    async def stop(self) -> None:
        self._stopped.set()
        await self.server.stop()
        await self.keeper.close()

    def health(self) -> dict[str, Any]:
        counters = self.server.counters
        refusals = sum(n for key, n in counters.items()
                       if key.startswith("http_4")) + counters["protocol_errors"]
        return {
            "kind": "web",
            "listen": self.config.listen,
            "listening": self.server.listening,
            "requests": counters["requests"],
            "refusals": refusals,
            "failures": sum(n for key, n in counters.items() if key.startswith("http_5")),
            "wrong_pins": self.server.guard.failures_total,
            "lockouts": self.server.guard.lockouts_total,
        }


def build(settings: GatewaySettings, ports: Ports) -> KeeperPage:
    config = settings.web
    assert config is not None, "built only when web: is configured"
    # Here, not at module level: aiohttp only for a site that has the page.
    from edge.web.app import KeeperWeb
    from edge.web.keeper_port import DaemonKeeper

    keeper = DaemonKeeper(ports)
    return KeeperPage(config, keeper, KeeperWeb(keeper, config))


SERVICE_TYPE = ServiceType("web", lambda s: s.web, lambda s: {}, build)
