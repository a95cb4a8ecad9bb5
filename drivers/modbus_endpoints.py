"""Modbus links by endpoint: buses on the same TCP ``host:port`` share one connection.

See drivers/modbus_link.py for why (gateways in front of RS-485 lines accept one
connection); an RTU bus's port is its own, so it always gets a link of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from typing import Any

from drivers.bus import BusHealth
from drivers.modbus_link import LinkUser, ModbusLink

# Open TCP links by endpoint, per event loop: a link's lock and futures belong to the
# loop it was opened in, and a finished loop takes its links with it.
_ENDPOINTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop,
                                      dict[tuple[str, int], ModbusLink]] = \
    weakref.WeakKeyDictionary()


def open_link(bus: Any, health: BusHealth, units: set[int]) -> tuple[ModbusLink, LinkUser]:
    """The link for ``bus``: the open one of its TCP endpoint, or a new one. An RTU bus,
    and a bus built outside a running loop, get a link of their own."""
    loop = _running_loop()
    if bus.type != "modbus_tcp" or loop is None:
        link = ModbusLink(bus, None if bus.type != "modbus_tcp" else (bus.host, bus.port))
        return link, link.join(bus, health, units)
    endpoints = _ENDPOINTS.setdefault(loop, {})
    key = (bus.host, bus.port)
    link = endpoints.get(key)
    if link is None:
        link = endpoints[key] = ModbusLink(bus, key)
    return link, link.join(bus, health, units)


def close_link(link: ModbusLink, bus_id: str) -> None:
    """``bus_id`` is done with ``link``; the connection closes with its last bus."""
    if not link.leave(bus_id) or link.key is None:
        return
    for endpoints in list(_ENDPOINTS.values()):
        if endpoints.get(link.key) is link:
            del endpoints[link.key]


def _running_loop() -> asyncio.AbstractEventLoop | None:
    with contextlib.suppress(RuntimeError):
        return asyncio.get_running_loop()
    return None
