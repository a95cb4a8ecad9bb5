"""A small site for rule tests: validated settings built in memory, and reading makers."""

from __future__ import annotations

from typing import Any

from edge.config import GatewaySettings
from vocab.model import Quality, Reading

S = 1000
MIN = 60 * S
HOUR = 60 * MIN
DAY = 24 * HOUR
# 2024-07-01 08:00 Beijing time (worked in tests/rules/test_rainfall.py).
T0 = 1_719_792_000_000


def settings(rules: list[dict[str, Any]], derived: list[dict[str, Any]] | None = None,
             *, language: str = "en", interval_s: float = 300) -> GatewaySettings:
    """Level logger (water level, rain gauge) and a piezometer reader, polled every 5 min."""
    return GatewaySettings.model_validate({
        "site": {"id": "test-site", "timezone": "Asia/Shanghai", "language": language,
                 "levels": {"dead": 110.0, "flood_limit": 123.5, "design_flood": 124.8,
                            "crest": 126.0}},
        "gateway": {"id": "gw"},
        "mqtt": {"host": "127.0.0.1"},
        "store": {"path": "/tmp/unused.db"},
        "buses": [{"id": "lan", "type": "modbus_tcp", "host": "127.0.0.1"}],
        "devices": [
            {"id": "level-1", "bus": "lan", "poll_interval_s": interval_s, "points": [
                {"id": "water_level", "quantity": "water_level", "unit": "m",
                 "register": {"table": "holding", "address": 0, "type": "float32"}},
                {"id": "rain", "quantity": "rainfall_counter", "unit": "mm",
                 "register": {"table": "holding", "address": 2},
                 "tipping_bucket": {"mm_per_tip": 0.5}},
            ]},
            {"id": "piezo-1", "bus": "lan", "poll_interval_s": interval_s, "points": [
                {"id": "head", "quantity": "piezometric_level", "unit": "m",
                 "register": {"table": "input", "address": 0}},
                {"id": "head2", "quantity": "piezometric_level", "unit": "m",
                 "register": {"table": "input", "address": 1}},
                {"id": "flow", "quantity": "seepage_flow", "unit": "L/s",
                 "register": {"table": "input", "address": 2}},
            ]},
        ],
        "rules": rules,
        "derived": derived or [],
    })


def reading(key: str, ts_ms: int, value: float | None, quality: Quality = "good",
            reason: str | None = None, unit: str = "m") -> Reading:
    device, point = key.split("/", 1)
    return Reading(device, point, ts_ms, value, unit, quality, None, reason)
