"""The keeper's page as one of the gateway's optional services (edge/ports.py).

Switched on by the site file's ``web:`` section (issue #17). It sends nothing through the
outbox; it serves the page (edge/web/app.py) on the daemon's loop from a ``KeeperPort``
on the running gateway (edge/web/keeper_port.py).

aiohttp and the pages (about 13 MiB and 0.15-0.3 s of import, docs/web.md) are loaded
when the service starts, on a worker thread: a gateway without ``web:`` never loads them
(tests/rules/test_footprint.py), and one with it is READY as early as one without, its
first polls not held while the page's code loads.

Its health (in the gateway's health topic under ``channels.web``) counts requests,
refusals (4xx, malformed requests), failures (5xx), wrong PINs and lock-outs.
"""

from __future__ import annotations

import asyncio
import importlib
from typing import TYPE_CHECKING, Any

from edge.config import GatewaySettings
from edge.ports import Ports, ServiceType
from edge.web.config import WebConfig

if TYPE_CHECKING:
    from edge.web.app import KeeperWeb
    from edge.web.keeper_port import DaemonKeeper

__all__ = ["SERVICE_TYPE", "KeeperPage", "build"]

# Loaded when the page starts; ``edge.web.app`` brings aiohttp.
PAGE_MODULES = ("edge.web.app", "edge.web.keeper_port")


def _load_page_modules() -> None:
    for name in PAGE_MODULES:
        importlib.import_module(name)


class KeeperPage:
    """The page's life in the gateway: start on the loop, serve, stop at exit or reload."""

    name = "web"

    def __init__(self, config: WebConfig, ports: Ports) -> None:
        self.config = config
        self.ports = ports
        self.keeper: DaemonKeeper | None = None
        self.server: KeeperWeb | None = None
        self._stopped = asyncio.Event()

    async def run(self) -> None:
        await asyncio.to_thread(_load_page_modules)
        if self._stopped.is_set():  # stopped while its code loaded
            return
        from edge.web.app import KeeperWeb
        from edge.web.keeper_port import DaemonKeeper

        self.keeper = DaemonKeeper(self.ports)
        self.server = KeeperWeb(self.keeper, self.config)
        await self.server.start()  # a busy or absent address is retried in the background
        if self._stopped.is_set():  # stopped while it started
            await self.server.stop()
            return
        await self._stopped.wait()

    async def stop(self) -> None:
        self._stopped.set()
        if self.server is not None:
            await self.server.stop()
        if self.keeper is not None:
            await self.keeper.close()

    def health(self) -> dict[str, Any]:
        server = self.server
        counters = server.counters if server is not None else {}
        refusals = sum(n for key, n in counters.items()
                       if key.startswith("http_4")) + counters.get("protocol_errors", 0)
        return {
            "kind": "web",
            "listen": self.config.listen,
            "listening": bool(server and server.listening),
            "requests": counters.get("requests", 0),
            "refusals": refusals,
            "failures": sum(n for key, n in counters.items() if key.startswith("http_5")),
            "wrong_pins": server.guard.failures_total if server is not None else 0,
            "lockouts": server.guard.lockouts_total if server is not None else 0,
        }


def build(settings: GatewaySettings, ports: Ports) -> KeeperPage:
    assert settings.web is not None, "built only when web: is configured"
    return KeeperPage(settings.web, ports)


SERVICE_TYPE = ServiceType("web", lambda s: s.web, lambda s: {}, build)
