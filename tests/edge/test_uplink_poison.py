"""Poison-message detection: repeated quick disconnects on the same oldest message."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from structlog.testing import capture_logs

from edge.channels.mqtt import MqttChannel, MqttConfig
from edge.channels.mqtt_poison import POISON_DISCONNECTS
from edge.outbox import Outbox
from edge.payloads import DEFAULT_MAX_MESSAGE_BYTES
from edge.store import Store, StoreWorker


def uplink(tmp_path: Path, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> MqttChannel:
    outbox = Outbox(StoreWorker(Store(tmp_path / "edge.db")))
    asyncio.run(outbox.open({"mqtt": ("telemetry", "alarm")}))
    config = MqttConfig(host="127.0.0.1", max_message_bytes=max_message_bytes)
    return MqttChannel(config, "reservoir/s/g", "reservoir-edge-s-g", outbox.channel("mqtt"))


def disconnect_quickly(up: MqttChannel, times: int) -> None:
    for _ in range(times):
        up._poison_watch.connected()
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
        up._poison_watch._connected_at = time.monotonic() - 60
        up._watch_for_poison("keepalive timeout")
    assert up._poison is None


def test_of_the_messages_in_flight_every_time_the_largest_is_the_poison(
        tmp_path: Path) -> None:
    # A small message sent just before the oversized one is still unacknowledged when the
    # broker drops the link, at every reconnect: the oversized one is set aside, not it.
    up = uplink(tmp_path)
    up._inflight = {11: 7, 12: 8}
    up._sizes = {7: 300, 8: 4000}
    disconnect_quickly(up, POISON_DISCONNECTS)
    assert up._poison == 8


def test_a_message_acknowledged_between_disconnects_is_no_longer_suspected(
        tmp_path: Path) -> None:
    up = uplink(tmp_path)
    up._inflight = {11: 7, 12: 8, 13: 9}
    up._sizes = {7: 300, 8: 200, 9: 100}
    disconnect_quickly(up, 1)
    up._inflight = {12: 8, 13: 9}  # 7 got its PUBACK after the reconnect
    disconnect_quickly(up, POISON_DISCONNECTS - 1)
    assert up._poison == 8


def test_a_drop_after_a_larger_message_outside_the_outbox_is_put_on_that_message(
        tmp_path: Path) -> None:
    # The health went over the broker's limit while a small telemetry message was in
    # flight: counted, that message was named poison and set aside (a CI failure).
    up = uplink(tmp_path)
    up._inflight = {11: 7}
    up._sizes = {7: 236}
    for _ in range(POISON_DISCONNECTS * 2):
        up._poison_watch.connected()
        up._poison_watch.sent_outside("reservoir/s/g/health", 1680)
        up._watch_for_poison("connection lost")
    assert up._poison is None
    assert up._poison_watch.blamed_outside == ("reservoir/s/g/health", 1680)
    assert up._poison_watch.outside_to_report() is None, "said once, at the first drop"


def test_a_smaller_message_outside_the_outbox_does_not_shield_the_poison(
        tmp_path: Path) -> None:
    up = uplink(tmp_path)
    up._inflight = {11: 7}
    up._sizes = {7: 6000}
    for _ in range(POISON_DISCONNECTS):
        up._poison_watch.connected()
        up._poison_watch.sent_outside("reservoir/s/g/health", 900)
        up._watch_for_poison("connection lost")
    assert up._poison == 7
    assert up._poison_watch.blamed_outside is None


def test_publish_now_refuses_a_message_over_the_limit_and_says_so_once(
        tmp_path: Path) -> None:
    up = uplink(tmp_path, max_message_bytes=1024)
    up.health_figures.connected = True
    sent: list[tuple[str, int]] = []
    up.client.publish = lambda topic, payload, **_: sent.append((topic, len(payload)))
    with capture_logs() as logs:
        assert not up.publish_now("reservoir/s/g/health", "x" * 1025)
        assert not up.publish_now("reservoir/s/g/health", "é" * 600), "UTF-8 bytes counted"
    assert [e["event"] for e in logs] == ["mqtt_message_over_limit"]
    assert logs[0]["bytes"] == 1025 and logs[0]["topic"] == "reservoir/s/g/health"
    assert up.publish_now("reservoir/s/g/health", "x" * 1024)
    assert sent == [("reservoir/s/g/health", 1024)]
    assert up._over_limit == set(), "fits again: a later refusal is said again"


def test_an_mqtt5_broker_s_smaller_packet_limit_bounds_messages_outside_the_outbox(
        tmp_path: Path) -> None:
    up = uplink(tmp_path, max_message_bytes=4096)
    topic = "reservoir/s/g/health"
    assert up.message_limit(topic) == 4096, "no CONNACK limit yet: the configured bound"
    up._paho.note_packet_limit(2000)  # as the CONNACK of a broker with max_packet_size 2000
    assert up.message_limit(topic) == 2000 - 16 - len(topic)
    up.health_figures.connected = True
    sent: list[int] = []
    up.client.publish = lambda topic, payload, **_: sent.append(len(payload))
    assert not up.publish_now(topic, "x" * 3000), "under max_message_bytes, over the broker's"
    assert up.publish_now(topic, "x" * up.message_limit(topic))
    assert sent == [up.message_limit(topic)]
    up._paho.note_packet_limit(None)  # a broker that announces none
    assert up.message_limit(topic) == 4096
