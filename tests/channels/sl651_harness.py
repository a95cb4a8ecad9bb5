"""A whole gateway in the test's own event loop reporting to SL 651 centres, on real parts:
a Modbus TCP server with a level logger and a rain gauge, the SQLite store in a temporary
directory, SL 651 centres on loopback (tests/channels/sl651_centre.py, written from the
standard alone) and no MQTT broker at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import yaml

from drivers.registers import encode_value
from edge.channels.sl651_service import Sl651Service
from edge.config import load_config
from edge.gateway import Gateway
from simulator.sl651_centre import Sl651Centre
from tests.drivers.modbus_server import FieldDevice, TcpFieldBus
from tests.support import free_port

STATION = "0033080001"


def site(tmp: Path, modbus_port: int, centres: list[Sl651Centre],
         **sl651: Any) -> dict[str, Any]:
    section: dict[str, Any] = {
        "station_address": STATION, "category": "K", "password_env": "EDGE_TEST_SL651_PW",
        "keepalive_s": 1, "timed_report_min": 60, "confirm_timeout_s": 0.5,
        "max_resends": 2, "retry_max_s": 0.3, "pace_s": 0,
        "centres": [{"address": c.address, "host": "127.0.0.1", "port": c.port}
                    for c in centres],
        "elements": [{"point": "level-1/water_level", "element": "ZU"},
                     {"point": "level-1/tailwater", "element": "ZB", "decimals": 3},
                     {"point": "rain/rain_total", "element": "PT"},
                     {"point": "level-1/battery", "element": "VT"}],
        **sl651,
    }
    float32 = {"table": "holding", "type": "float32"}
    return {
        "site": {"id": "test-site", "name": "Test reservoir", "timezone": "Asia/Shanghai"},
        "gateway": {"id": "gw-test"},
        "mqtt": {"host": "127.0.0.1", "port": free_port()},  # nothing listens: no uplink
        "store": {"path": str(tmp / "edge.db")},
        "health": {"interval_s": 1},
        "buses": [{"id": "lan", "type": "modbus_tcp", "host": "127.0.0.1",
                   "port": modbus_port, "timeout_s": 0.3}],
        "devices": [
            {"id": "level-1", "bus": "lan", "unit": 1, "poll_interval_s": 0.1, "points": [
                {"id": "water_level", "quantity": "water_level", "unit": "m",
                 "register": {**float32, "address": 0}},
                {"id": "tailwater", "quantity": "water_level", "unit": "m",
                 "register": {**float32, "address": 2}},
                {"id": "battery", "quantity": "battery_voltage", "unit": "V",
                 "register": {**float32, "address": 4}}]},
            {"id": "rain", "bus": "lan", "unit": 2, "poll_interval_s": 0.1, "points": [
                {"id": "rain_total", "quantity": "rainfall", "unit": "mm",
                 "register": {**float32, "address": 0}}]},
        ],
        "rules": [{"id": "level-high", "type": "threshold", "point": "level-1/water_level",
                   "high": [{"severity": "alarm", "value": 124.0}], "hysteresis": 0.05}],
        "sl651": section,
    }


class Site:
    """``async with Site(tmp_path, [centre]) as s:`` a running gateway and its gauges."""

    def __init__(self, tmp: Path, centres: list[Sl651Centre], **sl651: Any) -> None:
        self.tmp = tmp
        self.centres = centres
        self.level = FieldDevice(unit=1)
        self.rain = FieldDevice(unit=2)
        self.bus = TcpFieldBus([self.level, self.rain])
        self.sl651 = sl651
        self.gateway: Gateway | None = None
        self._task: asyncio.Task[int] | None = None
        self.set(level=123.456, tailwater=-0.5, battery=12.6, rain=10.0)

    async def __aenter__(self) -> Site:
        await self.bus.__aenter__()
        path = self.tmp / "site.yaml"
        path.write_text(yaml.safe_dump(site(self.tmp, self.bus.port, self.centres,
                                            **self.sl651)), encoding="utf-8")
        self.gateway = Gateway(load_config(path), path)
        self._task = asyncio.create_task(self.gateway.run())
        await self.until(lambda: self.service is not None and self.has_read(123.456),
                         "the sl651 service and a first poll", 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.gateway is not None and self._task is not None
        self.gateway.request_stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._task, 20)
        await self.bus.__aexit__()

    @property
    def service(self) -> Sl651Service | None:
        entry = self.gateway.services.get("sl651") if self.gateway else None
        return cast(Sl651Service, entry[0]) if entry is not None else None

    def has_read(self, level: float) -> bool:
        assert self.gateway is not None
        reading = self.gateway.pipeline.latest.get("level-1/water_level")
        return reading is not None and reading.value is not None and abs(
            reading.value - level) < 1e-4

    def set(self, *, level: float | None = None, tailwater: float | None = None,
            battery: float | None = None, rain: float | None = None) -> None:
        for device, address, value in ((self.level, 0, level), (self.level, 2, tailwater),
                                       (self.level, 4, battery), (self.rain, 0, rain)):
            if value is not None:
                device.holding[address:address + 2] = encode_value(value, "float32")

    async def read_level(self, level: float) -> None:
        self.set(level=level)
        await self.until(lambda: self.has_read(level), f"a poll reading {level}")

    def health(self, centre: Sl651Centre) -> dict[str, Any]:
        assert self.service is not None
        channels: dict[str, Any] = self.service.health()["channels"]
        return cast(dict[str, Any], channels[f"sl651-centre-{centre.address}"])

    async def until(self, condition: Callable[[], bool], what: str,
                    timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            await asyncio.sleep(0.05)
