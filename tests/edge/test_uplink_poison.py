"""Poison-message detection: repeated quick disconnects on the same oldest message."""

from __future__ import annotations

import time
from pathlib import Path

from edge.config import GatewaySettings
from edge.store import Store, StoreWorker
from edge.uplink import POISON_DISCONNECTS, MqttUplink


def uplink(tmp_path: Path) -> MqttUplink:
    settings = GatewaySettings.model_validate({
        "site": {"id": "s"}, "gateway": {"id": "g"}, "mqtt": {"host": "127.0.0.1"},
        "store": {"path": str(tmp_path / "edge.db")}})
    return MqttUplink(settings, StoreWorker(Store(settings.store.path)))


def disconnect_quickly(up: MqttUplink, times: int) -> None:
    for _ in range(times):
        up._connected_at = time.monotonic()
        up._watch_for_poison("connection lost")


def test_repeated_quick_disconnects_on_one_telemetry_message_mark_it(tmp_path: Path) -> None:
    up = uplink(tmp_path)
    up._inflight = {11: 7, 12: 8}
    disconnect_quickly(up, POISON_DISCONNECTS - 1)
    assert up._poison is None
    disconnect_quickly(up, 1)
    assert up._poison == 7


def test_an_alarm_is_never_taken_for_poison(tmp_path: Path) -> None:
    up = uplink(tmp_path)
    up._inflight = {11: 7, 12: 8}
    up._inflight_alarms = {7}
    disconnect_quickly(up, POISON_DISCONNECTS * 3)
    assert up._poison is None


def test_a_disconnect_after_a_long_connection_is_a_network_problem(tmp_path: Path) -> None:
    up = uplink(tmp_path)
    up._inflight = {11: 7}
    for _ in range(POISON_DISCONNECTS * 2):
        up._connected_at = time.monotonic() - 60
        up._watch_for_poison("keepalive timeout")
    assert up._poison is None
