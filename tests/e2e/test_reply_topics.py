"""MQTT 5 ResponseTopic: a requester cannot make the gateway publish outside its reply space.

Through a real Mosquitto, from real MQTT 5 clients (paho), to a running gateway.
"""

from __future__ import annotations

import json
from pathlib import Path

import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.support import Broker, Recorder, free_port, site_config, start_edge, wait_for_port

GATEWAY = "gw-reply"
ROOT = f"reservoir/test-site/{GATEWAY}"
HOSTILE = [
    f"{ROOT}/alarms",                          # its own alarms topic
    f"{ROOT}/telemetry",                       # its own telemetry
    "reservoir/test-site/other-gw/alarms",     # another gateway's root
    f"{ROOT}/reply/+",                         # a wildcard (paho raises on publish)
    "#",
    f"{ROOT}/reply/" + "x" * 300,              # too long
]


def test_response_topics_outside_the_reply_space_are_refused_and_counted(
        tmp_path: Path, broker: Broker) -> None:
    modbus_port = free_port()
    config = site_config(tmp_path, broker.port, modbus_port, gateway_id=GATEWAY)
    data = yaml.safe_load(config.read_text())
    data["mqtt"]["protocol"] = "5"
    data["health"] = {"interval_s": 1}
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    sim = start_edge(["simulate", "-c", str(config)], tmp_path / "sim.log")
    wait_for_port(modbus_port)
    watcher = Recorder(broker.port, "reservoir/#", protocol=5)
    gateway = start_edge(["run", "-c", str(config)], tmp_path / "gw.log")
    requester = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="v5-hostile",
                            protocol=mqtt.MQTTv5)
    requester.connect("127.0.0.1", broker.port)
    requester.loop_start()

    def ask(request_id: str, response_topic: str) -> None:
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = response_topic
        requester.publish(f"{ROOT}/cmd/get_status", json.dumps({"id": request_id}), qos=1,
                          properties=props).wait_for_publish(5)

    def replies(request_id: str) -> list[str]:
        return [t for t, body, _ in watcher.messages
                if body.get("id") == request_id and "ok" in body]

    try:
        watcher.wait_for(lambda r: len(r.on("/telemetry")) >= 1, 20, "telemetry")
        for n, topic in enumerate(HOSTILE):
            ask(f"bad-{n}", topic)
        ask("good", f"{ROOT}/reply/platform-1")
        watcher.wait_for(lambda r: len(replies("good")) >= 2, 15, "the accepted reply")
        assert sorted(replies("good")) == [f"{ROOT}/cmd/get_status/reply",
                                          f"{ROOT}/reply/platform-1"]
        for n, _ in enumerate(HOSTILE):
            # Only the plain reply, with the refusal; nothing on the asked topic.
            assert replies(f"bad-{n}") == [f"{ROOT}/cmd/get_status/reply"], n
            error = watcher.on("/cmd/get_status/reply")
            assert any(m["id"] == f"bad-{n}" and m["ok"] is False
                       and "ResponseTopic refused" in m["error"] for m in error)

        def refused(r: Recorder) -> bool:
            health = r.on(f"{ROOT}/health")
            return bool(health) and health[-1].get("commands", {}).get(
                "reply_topics_refused") == len(HOSTILE)

        watcher.wait_for(refused, 10, "health.commands.reply_topics_refused")
        assert gateway.proc.poll() is None
    finally:
        requester.loop_stop()
        gateway.stop()
        sim.kill()
        watcher.close()
    log = gateway.output()
    assert "never retrieved" not in log and "Traceback" not in log
    assert log.count("command_reply_topic_refused") == len(HOSTILE)
