"""A whole gateway in the test's own event loop, on real parts: a Modbus TCP server with a
level logger, the keeper's button box and a relay board, a simulated modem on a
pseudo-terminal, the SQLite store in a temporary directory, and no MQTT broker at all.

Faster than a gateway process and it lets a test look inside (the pipeline, the notify
service, the store); the end-to-end tests (test_notify_e2e.py) run the real processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import yaml

from drivers.registers import encode_value
from edge.channels.notify_service import NotifyService
from edge.config import load_config
from edge.gateway import Gateway
from simulator.modem import SentText, SimulatedModem
from simulator.relay import RelayModule
from tests.drivers.modbus_server import FieldDevice, TcpFieldBus
from tests.notify import independent
from tests.support import free_port

KEEPER, OFFICER, GRID = "+8613800000001", "+8613800000002", "+8613800000003"
LEVEL_POINTS = 15


def site(tmp: Path, modbus_port: int, modem_port: Path, **notify: Any) -> dict[str, Any]:
    """A site whose level logger has LEVEL_POINTS level points, each with its rule."""
    points = [{"id": f"level_{n}", "quantity": "water_level", "unit": "m",
               "register": {"table": "holding", "address": 2 * n, "type": "float32"}}
              for n in range(LEVEL_POINTS)]
    rules = [{"id": f"high-{n}", "type": "threshold", "point": f"level-1/level_{n}",
              "high": [{"severity": "warning", "value": 123.5},
                       {"severity": "alarm", "value": 124.8}], "hysteresis": 0.05}
             for n in range(LEVEL_POINTS)]
    section: dict[str, Any] = {
        "modem": {"port": str(modem_port), "command_timeout_s": 0.5, "send_timeout_s": 2,
                  "status_interval_s": 2},
        "language": "zh", "pace_s": 1, "retry_s": 0.5,
        "contacts": [{"id": "keeper", "name": "王师傅", "phone": KEEPER},
                     {"id": "water-officer", "phone": OFFICER},
                     {"id": "grid-staff", "phone": GRID}],
        "escalation": [{"after_min": 0, "contacts": ["keeper"], "min_severity": "warning"},
                       {"after_min": 0.05, "contacts": ["water-officer"],
                        "min_severity": "alarm"},
                       {"after_min": 0.15, "contacts": ["grid-staff"],
                        "min_severity": "alarm"}],
        "sirens": [{"id": "siren-1", "bus": "lan", "unit": 9, "coil": 0,
                    "min_severity": "alarm", "on_s": 1, "off_s": 1, "max_s": 600,
                    "check_interval_s": 5}],
        "ack_button": {"point": "keeper-box/ack", "by": "值班按钮"},
        "point_names": {"level-1/level_0": "库水位"},
        **notify,
    }
    return {
        "site": {"id": "test-site", "name": "某某水库", "timezone": "Asia/Shanghai"},
        "gateway": {"id": "gw-test"},
        "mqtt": {"host": "127.0.0.1", "port": free_port()},  # nothing listens: no uplink
        "store": {"path": str(tmp / "edge.db")},
        "health": {"interval_s": 1},
        "buses": [{"id": "lan", "type": "modbus_tcp", "host": "127.0.0.1",
                   "port": modbus_port, "timeout_s": 0.3}],
        "devices": [
            {"id": "level-1", "bus": "lan", "unit": 1, "poll_interval_s": 0.2,
             "points": points},
            {"id": "keeper-box", "bus": "lan", "unit": 3, "poll_interval_s": 0.1,
             "points": [{"id": "ack", "quantity": "status",
                         "register": {"table": "discrete", "address": 0}}]},
        ],
        "rules": rules,
        "notify": section,
    }


class Site:
    """``async with Site(tmp_path) as s:`` a running gateway and its equipment."""

    def __init__(self, tmp: Path, **notify: Any) -> None:
        self.tmp = tmp
        self.level = FieldDevice(unit=1)
        self.box = FieldDevice(unit=3)
        self.relay = RelayModule(unit=9, channels=8)
        # The relay board serves as a field device does (a unit and its SimDevice).
        self.bus = TcpFieldBus([self.level, self.box, cast(Any, self.relay)])
        self.modem = SimulatedModem(tmp / "usb-Quectel_EC25-if02-port0", first_reference=40)
        self.notify = notify
        self.gateway: Gateway | None = None
        self._task: asyncio.Task[int] | None = None
        self.set_levels(123.0)

    async def __aenter__(self) -> Site:
        await self.bus.__aenter__()
        self.modem.start()
        path = self.tmp / "site.yaml"
        path.write_text(yaml.safe_dump(site(self.tmp, self.bus.port, self.modem.link_path,
                                            **self.notify), allow_unicode=True),
                        encoding="utf-8")
        self.gateway = Gateway(load_config(path), path)
        self._task = asyncio.create_task(self.gateway.run())
        await self.until(lambda: self.service is not None and self.modem_ready(),
                         "the notify service and its modem", 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.gateway is not None and self._task is not None
        self.gateway.request_stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._task, 20)
        await self.bus.__aexit__()
        self.modem.stop()

    # -- looking inside --------------------------------------------------------------------

    @property
    def service(self) -> NotifyService | None:
        entry = self.gateway.services.get("notify") if self.gateway else None
        return cast(NotifyService, entry[0]) if entry is not None else None

    def modem_ready(self) -> bool:
        service = self.service
        return bool(service and service.modem and service.modem.state.value == "ready")

    def texts_to(self, phone: str) -> list[str]:
        """What the modem sent to ``phone``, read with the independent PDU decoder."""
        return [independent.submit_text([p.pdu for p in t.parts])
                for t in self.modem.sent if t.destination == phone and t.complete]

    def sent(self) -> list[SentText]:
        return [t for t in self.modem.sent if t.complete]

    def rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(self.tmp / "edge.db")
        try:
            return list(conn.execute(sql, args))
        finally:
            conn.close()

    # -- acting on it ---------------------------------------------------------------------

    def set_levels(self, value: float, count: int = LEVEL_POINTS) -> None:
        for n in range(count):
            self.level.holding[2 * n: 2 * n + 2] = encode_value(value, "float32")

    def press(self, down: bool) -> None:
        self.box.discrete[0] = 1 if down else 0

    async def until(self, condition: Callable[[], bool], what: str,
                    timeout: float = 8.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            await asyncio.sleep(0.05)
