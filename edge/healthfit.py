"""The health snapshot within the broker's packet limit.

The snapshot holds an entry per device and per bus: about 290 bytes for a small device on
a Modbus TCP endpoint of its own, 59 KB at 200 of them. That is over the gateway's own
``mqtt.max_message_bytes`` (48 KiB), and at some 230 devices over ThingsBoard's MQTT limit
(65,536 B); a broker drops the connection on a packet over its limit, so published whole
every ``health.interval_s`` the health would drop the uplink every interval, taking the
telemetry in flight with it. A test broker with a 1,500-byte limit did just that with
three devices.

So what is published on ``{root}/health`` and returned by ``get_status`` keeps every
gateway-wide figure and as many device and bus entries as fit, those in trouble first
(offline devices, failing ones, disconnected buses, then devices with errors), in their
own order, and says how many it left out in ``omitted``. The status file that
``edge status`` reads is local and keeps them all.
"""

from __future__ import annotations

import json
from typing import Any


def _json(value: Any) -> str:
    # ASCII (json.dumps' default), as the health is published: characters are bytes.
    return json.dumps(value, separators=(",", ":"))


def _size(value: Any) -> int:
    return len(_json(value))


def _device_rank(device: dict[str, Any]) -> int:
    if not device.get("online", True):
        return 0
    if device.get("consecutive_failures"):
        return 1
    return 3 if not device.get("errors") else 2


def fitted_json(snapshot: dict[str, Any], max_bytes: int) -> str:
    """The health message: ``snapshot``'s JSON if it is at most ``max_bytes``, else that
    of ``fit_snapshot`` (the whole snapshot is encoded once either way)."""
    text = _json(snapshot)
    return text if len(text) <= max_bytes else _json(_fitted(snapshot, max_bytes))


def fit_snapshot(snapshot: dict[str, Any], max_bytes: int) -> dict[str, Any]:
    """``snapshot`` itself if its JSON is at most ``max_bytes``, else a copy with the
    device and bus entries that fit, and ``omitted``: how many of each were left out."""
    return snapshot if _size(snapshot) <= max_bytes else _fitted(snapshot, max_bytes)


def _fitted(snapshot: dict[str, Any], max_bytes: int) -> dict[str, Any]:
    devices: list[dict[str, Any]] = snapshot.get("devices") or []
    buses: dict[str, dict[str, Any]] = snapshot.get("buses") or {}
    # Measured with every entry counted as omitted: the counts only shrink from here.
    bare = {**snapshot, "devices": [], "buses": {},
            "omitted": {"devices": len(devices), "buses": len(buses)}}
    room = max_bytes - _size(bare)
    ranked: list[tuple[int, int, str | None, dict[str, Any]]] = [
        (_device_rank(device), index, None, device) for index, device in enumerate(devices)]
    ranked += [(0 if not bus.get("connected", True) else 4, index, bus_id, bus)
               for index, (bus_id, bus) in enumerate(buses.items())]
    kept_devices: set[int] = set()
    kept_buses: set[str] = set()
    for _, index, bus_id, entry in sorted(ranked, key=lambda item: (item[0], item[1])):
        # A comma for each entry; a bus also costs its key and colon.
        cost = _size(entry) + 1 + (0 if bus_id is None else _size(bus_id) + 1)
        if cost > room:
            continue  # a smaller entry further on may still fit
        room -= cost
        if bus_id is None:
            kept_devices.add(index)
        else:
            kept_buses.add(bus_id)
    return {**bare,
            "devices": [d for index, d in enumerate(devices) if index in kept_devices],
            "buses": {bus_id: bus for bus_id, bus in buses.items() if bus_id in kept_buses},
            "omitted": {"devices": len(devices) - len(kept_devices),
                        "buses": len(buses) - len(kept_buses)}}
