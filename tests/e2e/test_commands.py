"""Remote commands and the health topic, through a real broker to a running gateway."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from tests.e2e.test_contract import schemas
from tests.support import (
    Broker,
    EdgeProcess,
    Recorder,
    free_port,
    site_config,
    start_edge,
    wait_for_port,
)

GATEWAY = "gw-cmd"
ROOT = f"reservoir/test-site/{GATEWAY}"


class Platform:
    """Sends commands like the district platform and waits for the matching reply."""

    def __init__(self, broker: Broker) -> None:
        self.rec = Recorder(broker.port, f"{ROOT}/#")
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"plat-{time.time_ns()}")
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        self.n = 0

    def ask(self, name: str, args: dict[str, Any] | None = None, timeout: float = 40,
            raw: bytes | None = None) -> dict[str, Any]:
        self.n += 1
        request_id = f"req-{self.n}"
        payload = raw if raw is not None else json.dumps({"id": request_id, "args": args or {}})
        self.client.publish(f"{ROOT}/cmd/{name}", payload, qos=1)
        want = None if raw is not None else request_id

        def answered(r: Recorder) -> bool:
            return any(m.get("id") == want for m in r.on(f"/cmd/{name}/reply"))

        self.rec.wait_for(answered, timeout, f"reply to {name}")
        return [m for m in self.rec.on(f"/cmd/{name}/reply") if m.get("id") == want][-1]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
        self.rec.close()


@pytest.fixture
def running(tmp_path: Path, broker: Broker) -> Iterator[tuple[Path, Platform, EdgeProcess]]:
    modbus_port = free_port()
    config = site_config(tmp_path, broker.port, modbus_port, interval=0.5, gateway_id=GATEWAY)
    data = yaml.safe_load(config.read_text())
    data["health"] = {"interval_s": 1}
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    script = tmp_path / "values.yaml"
    script.write_text(yaml.safe_dump({"level-1/water_level": [[0, 124.0]]}))  # above limit
    sim = start_edge(["simulate", "-c", str(config), "--values", str(script)],
                     tmp_path / "sim.log")
    wait_for_port(modbus_port)
    platform = Platform(broker)
    gateway = start_edge(["run", "-c", str(config)], tmp_path / "gw.log")
    try:
        platform.rec.wait_for(lambda r: len(r.on("/telemetry")) >= 2, 20, "telemetry")
        yield config, platform, gateway
    finally:
        gateway.stop()
        sim.kill()
        platform.close()


def test_health_get_status_and_inspect(running: tuple[Path, Platform, EdgeProcess]) -> None:
    _, platform, _ = running
    platform.rec.wait_for(lambda r: len(r.on("/health")) >= 2, 10, "health messages")
    health = platform.rec.on("/health")[-1]
    contract = schemas()
    jsonschema.validate(health, contract["health"])
    assert health["outbox"]["depth"] >= 0 and health["uplink"]["connected"] is True
    assert {d["device"] for d in health["devices"]} == {"level-1", "piezo-1"}
    assert "synchronized" in health["clock"] and health["process"]["rss_bytes"] > 0

    status = platform.ask("get_status")
    for reply in platform.rec.on("/reply"):
        jsonschema.validate(reply, contract["command_reply"])
    assert status["ok"] is True and status["result"]["config"] == health["config"]

    report = platform.ask("inspect")
    assert report["ok"] is True
    points = {p["point"]: p for p in report["result"]["points"]}
    assert set(points) == {"level-1/water_level", "level-1/rain_counter", "piezo-1/pressure"}
    assert all(p["fresh"] and p["quality"] == "good" for p in points.values())
    assert points["level-1/water_level"]["value"] == 124.0
    assert points["level-1/water_level"]["alarms"][0]["rule"] == "level-high"
    assert all(d["online"] for d in report["result"]["devices"])


def test_ack_alarm_and_get_readings(running: tuple[Path, Platform, EdgeProcess]) -> None:
    _, platform, _ = running
    platform.rec.wait_for(lambda r: bool(r.on("/alarms")), 10, "the raised alarm")
    alarm_id = platform.rec.on("/alarms")[0]["alarm"]["id"]
    reply = platform.ask("ack_alarm", {"alarm_id": alarm_id})
    assert reply == {"id": reply["id"], "ok": True,
                     "result": {"alarm_id": alarm_id, "acknowledged": True}}
    platform.rec.wait_for(lambda r: any(a["alarm"]["state"] == "acknowledged"
                                        for a in r.on("/alarms")), 10, "acknowledged")
    again = platform.ask("ack_alarm", {"alarm_id": alarm_id})
    assert again["ok"] is False and "no unacknowledged active alarm" in again["error"]

    platform.rec.wait_for(lambda r: sum(1 for m in r.on("/telemetry") for x in m["readings"]
                                        if x["point"] == "water_level") >= 4, 10, "4 levels")
    now = int(time.time() * 1000)
    got = platform.ask("get_readings", {"point": "level-1/water_level", "from": now - 60_000,
                                        "to": now, "limit": 3})
    assert got["ok"] is True
    assert [r["value"] for r in got["result"]["readings"]] == [124.0] * 3
    assert got["result"]["truncated"] is True
    unknown = platform.ask("get_readings", {"point": "level-9/x", "from": 0, "to": now})
    assert unknown["ok"] is False and "unknown point" in unknown["error"]


def test_malformed_commands_change_nothing(running: tuple[Path, Platform,
                                                          EdgeProcess]) -> None:
    _, platform, gateway = running
    bad = platform.ask("get_status", raw=b"{oops")
    assert bad["ok"] is False and "not valid JSON" in bad["error"]
    unknown = platform.ask("format_disk")
    assert unknown["ok"] is False and "unknown command" in unknown["error"]
    before = len(platform.rec.on("/telemetry"))
    platform.rec.wait_for(lambda r: len(r.on("/telemetry")) > before + 2, 20, "telemetry")
    assert gateway.proc.poll() is None


def test_reload_config_adds_a_device_and_refuses_a_broken_config(
        running: tuple[Path, Platform, EdgeProcess]) -> None:
    config, platform, gateway = running
    data = yaml.safe_load(config.read_text())
    good_text = config.read_text()
    data["devices"].append({"id": "piezo-2", "bus": "lan", "unit": 2, "poll_interval_s": 0.5,
                            "points": [{"id": "pressure", "unit": "kPa", "register": {
                                "table": "input", "address": 10, "type": "int32",
                                "word_order": "little"}, "scale": 0.01}]})
    data["rules"][0]["hysteresis"] = 0.1
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    reply = platform.ask("reload_config")
    assert reply["ok"] is True, reply
    platform.rec.wait_for(lambda r: any(x["device"] == "piezo-2" for m in r.on("/telemetry")
                                        for x in m["readings"]), 10, "the new device")

    config.write_text(good_text.replace("poll_interval_s: 0.5", "poll_interval_s: -1", 1))
    refused = platform.ask("reload_config")
    assert refused["ok"] is False
    assert "site.yaml:" in refused["error"] and "poll_interval_s" in refused["error"]
    count = len(platform.rec.on("/telemetry"))
    platform.rec.wait_for(lambda r: len(r.on("/telemetry")) > count + 3, 20,
                          "telemetry after the refused reload")
    assert any(x["device"] == "piezo-2" for m in platform.rec.on("/telemetry")[count:]
               for x in m["readings"]), "the running config (with piezo-2) stays"
    assert gateway.proc.poll() is None


def test_resend_rebuilds_a_seq_range_from_the_store(
        running: tuple[Path, Platform, EdgeProcess]) -> None:
    _, platform, _ = running
    platform.rec.wait_for(lambda r: {1, 2, 3} <= {m["seq"] for m in r.on("/telemetry")
                                                  + r.on("/alarms")}, 10, "seqs 1-3")
    originals = {m["seq"]: m for m in platform.rec.on("/telemetry") + platform.rec.on("/alarms")
                 if m["seq"] <= 3}
    time.sleep(1.5)  # their acknowledgements have been written
    reply = platform.ask("resend", {"from_seq": 1, "to_seq": 3})
    assert reply["ok"] is True, reply
    assert reply["result"]["requeued"] + reply["result"]["already_queued"] == 3
    assert reply["result"]["missing"] == []

    def arrivals(r: Recorder, seq: int) -> int:
        return sum(1 for m in r.on("/telemetry") + r.on("/alarms") if m["seq"] == seq)

    platform.rec.wait_for(lambda r: all(arrivals(r, s) >= 2 for s in (1, 2, 3)), 10,
                          "seqs 1-3 again")
    resent = [m for m in platform.rec.on("/telemetry") if m["seq"] <= 3 and m.get("replay")]
    assert resent, "rebuilt telemetry is sent as replay"
    for m in resent:
        original = originals[m["seq"]]
        assert m.get("readings") == original.get("readings")
    bad = platform.ask("resend", {"from_seq": 5, "to_seq": 2})
    assert bad["ok"] is False and "args.to_seq" in bad["error"]


def test_reload_with_mqtt_settings_that_cannot_connect_is_refused(
        running: tuple[Path, Platform, EdgeProcess], monkeypatch: pytest.MonkeyPatch) -> None:
    config, platform, gateway = running
    good = config.read_text()
    data = yaml.safe_load(good)
    data["mqtt"].update({"username": "gw", "password_env": "EDGE_TEST_UNSET_PASSWORD"})
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    refused = platform.ask("reload_config")
    assert refused["ok"] is False
    assert "EDGE_TEST_UNSET_PASSWORD is not set" in refused["error"]
    count = len(platform.rec.on("/telemetry"))
    platform.rec.wait_for(lambda r: len(r.on("/telemetry")) > count + 3, 20,
                          "the running uplink keeps publishing")
    config.write_text(good)
    assert platform.ask("get_status")["ok"] is True
    assert gateway.proc.poll() is None


def test_resend_a_list_of_seqs_and_ranges_sends_exactly_those(
        running: tuple[Path, Platform, EdgeProcess]) -> None:
    _, platform, _ = running

    def arrivals(r: Recorder, seq: int) -> int:
        return sum(1 for m in r.on("/telemetry") + r.on("/alarms") if m["seq"] == seq)

    platform.rec.wait_for(lambda r: all(arrivals(r, s) for s in range(1, 7)), 15, "seqs 1-6")
    time.sleep(1.5)  # their acknowledgements have been written
    reply = platform.ask("resend", {"seqs": [6, 1, [3, 4]]})
    assert reply["ok"] is True, reply
    assert reply["result"]["requeued"] + reply["result"]["already_queued"] == 4
    assert reply["result"]["missing"] == []
    platform.rec.wait_for(lambda r: all(arrivals(r, s) >= 2 for s in (1, 3, 4, 6)), 10,
                          "seqs 1, 3, 4 and 6 again")
    time.sleep(1.0)
    assert arrivals(platform.rec, 2) == 1 and arrivals(platform.rec, 5) == 1, \
        "seqs not asked for are not sent again"
    bad = platform.ask("resend", {"seqs": [1, [9, 2]]})
    assert bad["ok"] is False and bad["error"] == "args.seqs: item 1: range [9, 2] is reversed"


def test_health_and_get_status_stay_within_the_broker_s_packet_limit(tmp_path: Path) -> None:
    # 40 one-register piezometers: the whole health is some 10 kB. The broker drops any
    # client that sends a packet over 2,200 bytes, and the site's mqtt.max_message_bytes
    # says 2,048: the health and the get_status reply keep the devices that fit, say how
    # many they left out, and the uplink is never dropped.
    broker = Broker(tmp_path, extra="max_packet_size 2200\n")
    broker.start()
    modbus_port = free_port()
    piezometers = [{"id": f"pz-{n:02d}", "bus": "lan", "unit": 10 + n, "poll_interval_s": 0.5,
                    "points": [{"id": "head", "quantity": "seepage_pressure", "unit": "kPa",
                                "register": {"table": "holding", "address": 0,
                                             "type": "uint16"}}]} for n in range(40)]
    config = site_config(tmp_path, broker.port, modbus_port, gateway_id=GATEWAY, rules=[],
                         extra_devices=piezometers, mqtt_extra={"max_message_bytes": 2048})
    data = yaml.safe_load(config.read_text())
    data["health"] = {"interval_s": 1}
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    sim = start_edge(["simulate", "-c", str(config)], tmp_path / "sim.log")
    wait_for_port(modbus_port)
    platform = Platform(broker)
    gateway = start_edge(["run", "-c", str(config)], tmp_path / "gw.log")
    try:
        platform.rec.wait_for(lambda r: len(r.on("/health")) >= 3, 20, "health messages")
        status = platform.ask("get_status")
    finally:
        gateway.stop()
        sim.kill()
        platform.close()
        broker.stop()
    contract = schemas()
    for health in platform.rec.on("/health"):
        jsonschema.validate(health, contract["health"])
        assert len(json.dumps(health, separators=(",", ":"))) <= 2048
        assert health["omitted"]["devices"] > 0
        assert len(health["devices"]) + health["omitted"]["devices"] == 42
    assert status["ok"] is True, status
    assert len(json.dumps(status, separators=(",", ":"))) <= 2048
    assert status["result"]["omitted"]["devices"] > 0
    assert gateway.output().count('"mqtt_connected"') == 1, "never dropped by the broker"
