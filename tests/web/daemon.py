"""The daemon's own parts in one test process: a real store, outbox, pipeline with its rule
engine, bus supervisor and inspection, lent to the page as the gateway lends them
(``Ports``), with the pipeline task running on the test's loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from edge.buses import BusSupervisor
from edge.channels.mqtt import KINDS as MQTT_KINDS
from edge.command_handlers import Inspection
from edge.config import GatewaySettings
from edge.outbox import Outbox
from edge.pipeline import Pipeline
from edge.ports import Ports
from edge.store import Store, StoreWorker
from rules.engine import RuleEngine
from vocab.model import PollResult, Reading

S = 1000
MIN = 60 * S
HOUR = 60 * MIN


def site(store: Path, *, interval_s: float = 60, rules: list[dict[str, Any]] | None = None,
         extra_points: list[dict[str, Any]] | None = None,
         tcp_port: int = 1) -> GatewaySettings:
    """A small reservoir: tailwater and reservoir level, a rain gauge, two piezometers, a
    freeboard and a gradient, rainfall sums with a limit, and level limits."""
    return GatewaySettings.model_validate({
        "site": {"id": "yangjiayuan", "name": "杨家源水库", "timezone": "Asia/Shanghai",
                 "language": "zh",
                 "levels": {"crest": 126.0, "dead": 110.0, "flood_limit": 123.5,
                            "design_flood": 124.8}},
        "gateway": {"id": "gw-01"},
        "mqtt": {"host": "127.0.0.1"},
        "store": {"path": str(store)},
        "buses": [{"id": "lan", "type": "modbus_tcp", "host": "127.0.0.1", "port": tcp_port,
                   "timeout_s": 0.2}],
        "devices": [
            {"id": "level-1", "bus": "lan", "poll_interval_s": interval_s, "points": [
                {"id": "tailwater", "name": "下游水位", "quantity": "water_level", "unit": "m",
                 "register": {"table": "holding", "address": 4, "type": "float32"}},
                {"id": "water_level", "name": "坝前水位", "quantity": "water_level",
                 "unit": "m", "register": {"table": "holding", "address": 0,
                                           "type": "float32"}},
                {"id": "rain", "quantity": "rainfall_counter", "unit": "mm",
                 "register": {"table": "holding", "address": 2},
                 "tipping_bucket": {"mm_per_tip": 0.5}},
                *(extra_points or []),
            ]},
            {"id": "piezo-1", "bus": "lan", "unit": 2, "poll_interval_s": interval_s * 2,
             "offline_after": 5, "points": [
                 {"id": "head1", "name": "P1 渗压计", "quantity": "piezometric_level",
                  "unit": "m", "register": {"table": "input", "address": 0}},
                 {"id": "head2", "quantity": "piezometric_level", "unit": "m",
                  "register": {"table": "input", "address": 1}},
             ]},
        ],
        "derived": [
            {"id": "gradient", "name": "P1–P2 坡降",
             "expression": "({piezo-1/head1} - {piezo-1/head2}) / L", "constants": {"L": 12.5}},
            {"id": "freeboard", "name": "超高", "expression": "crest - {level-1/water_level}",
             "unit": "m"},
        ],
        "rules": rules if rules is not None else [
            {"id": "level-high", "type": "threshold", "point": "level-1/water_level",
             "high": [{"severity": "warning", "value": "flood_limit"},
                      {"severity": "alarm", "value": "design_flood"}],
             "low": [{"severity": "warning", "value": "dead"}]},
            {"id": "level-rise", "type": "rate", "point": "level-1/water_level",
             "window": "1h", "method": "endpoint", "per": "m/h",
             "high": [{"severity": "warning", "value": 0.5}]},
            {"id": "rain", "type": "accumulation", "point": "level-1/rain",
             "windows": [{"window": "1h", "high": [{"severity": "warning", "value": 20}]},
                         {"window": "3h"}, {"window": "2h"}, {"window": "24h"}]},
        ],
    })


async def _room(quota_bytes: int) -> None:
    """The tests' disks are never full; a failed commit is what they look at."""


class Daemon:
    """Store, outbox, pipeline (running), buses (not started) and inspection."""

    def __init__(self, settings: GatewaySettings,
                 channel_health: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.settings = settings
        self.store = StoreWorker(Store(settings.store.path, "normal"))
        self.outbox = Outbox(self.store)
        self.pipeline = Pipeline(self.store, self.outbox, _room)
        self.buses = BusSupervisor(settings, self.pipeline.enqueue)
        self.inspection = Inspection(settings.iter_points, self.buses, self.pipeline)
        health = {"mqtt": {"connected": True}} if channel_health is None else channel_health
        self.ports = Ports(self.store, self.outbox, self.pipeline, self.buses, self.inspection,
                           lambda: self.settings, lambda: health)
        self._task: asyncio.Task[None] | None = None

    async def start(self, channels: Mapping[str, tuple[str, ...]] | None = None) -> None:
        await self.outbox.open(channels or {"mqtt": MQTT_KINDS})
        await self.pipeline.rebuild_engine(
            lambda active: RuleEngine(self.settings.rule_site(), active))
        self._task = asyncio.create_task(self.pipeline.run())

    async def poll(self, device: str, *readings: Reading) -> None:
        """One device's poll through the rules into the store, as a bus task hands it."""
        self.pipeline.polled.clear()
        await self.pipeline.enqueue(PollResult("lan", device, tuple(readings), 1, True))
        await asyncio.wait_for(self.pipeline.polled.wait(), 10)

    async def stop(self) -> None:
        await self.buses.stop_all()
        await self.pipeline.stop()
        if self._task is not None:
            await asyncio.wait_for(self._task, 10)
        self.store.close()


@contextlib.asynccontextmanager
async def running(settings: GatewaySettings,
                  channel_health: Mapping[str, Mapping[str, Any]] | None = None,
                  ) -> AsyncIterator[Daemon]:
    daemon = Daemon(settings, channel_health)
    await daemon.start()
    try:
        yield daemon
    finally:
        await daemon.stop()


def level(ts_ms: int, value: float | None, point: str = "water_level") -> Reading:
    return Reading("level-1", point, ts_ms, value, "m", "good" if value is not None else "bad",
                   None, None if value is not None else "timeout")
