"""The shipped Mosquitto ACL (config/mosquitto/acl.example) against a real broker.

Users and hashes are made with mosquitto_passwd in a temporary directory, as the recipe in
config/mosquitto/README.md does; the broker runs with password_file and acl_file. A client
that is not the platform cannot get a command to the gateway; the platform can.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from tests.support import REPO, Broker, free_port, site_config, start_edge, wait_for_port

GATEWAY = "gw-acl"
ROOT = f"reservoir/test-site/{GATEWAY}"
GATEWAY_USER = "gw-yangjiayuan-01"  # the user acl.example names
USERS = {GATEWAY_USER: "gw-secret", "platform": "platform-secret",
         "intruder": "intruder-secret"}


class Login:
    """An MQTT client logged in as a broker user, recording what it receives."""

    def __init__(self, port: int, user: str | None, topic: str | None = None) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self.connack: list[bool] = []
        self._cond = threading.Condition()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=f"{user}-{time.time_ns()}")
        if user is not None:
            self.client.username_pw_set(user, USERS[user])
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, u, f, rc, p: self._connected(rc, topic)
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()

    def _connected(self, reason: Any, topic: str | None) -> None:
        with self._cond:
            self.connack.append(not reason.is_failure)
            self._cond.notify_all()
        if topic is not None and not reason.is_failure:
            self.client.subscribe(topic, qos=1)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            body = json.loads(msg.payload)
        except ValueError:
            body = {}
        with self._cond:
            self.messages.append((msg.topic, body))
            self._cond.notify_all()

    def on(self, suffix: str) -> list[dict[str, Any]]:
        with self._cond:
            return [b for t, b in self.messages if t.endswith(suffix)]

    def wait_for(self, predicate: Callable[[Login], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
                self._cond.wait(min(remaining, 0.2))

    def command(self, name: str, request_id: str) -> None:
        self.client.publish(f"{ROOT}/cmd/{name}", json.dumps({"id": request_id}),
                            qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def acl_broker(tmp_path: Path) -> Iterator[Broker]:
    passwd_exe = shutil.which("mosquitto_passwd")
    if passwd_exe is None:
        pytest.fail("mosquitto_passwd is not installed (apt-get install -y mosquitto)")
    passwd = tmp_path / "reservoir-edge.passwd"
    for n, (user, password) in enumerate(USERS.items()):
        subprocess.run([passwd_exe, *(["-c"] if n == 0 else []), "-b", str(passwd), user,
                        password], check=True, capture_output=True)
    assert "secret" not in passwd.read_text(), "the file holds hashes, not passwords"
    acl = tmp_path / "reservoir-edge.acl"
    example = (REPO / "config/mosquitto/acl.example").read_text(encoding="utf-8")
    assert "reservoir/yangjiayuan/gw-01" in example
    acl.write_text(example.replace("reservoir/yangjiayuan/gw-01", ROOT), encoding="utf-8")
    broker = Broker(tmp_path)
    user = "user root\n" if os.geteuid() == 0 else ""  # as tests/support.py's Broker
    broker.conf.write_text(f"listener {broker.port} 127.0.0.1\n{user}persistence false\n"
                           f"allow_anonymous false\npassword_file {passwd}\nacl_file {acl}\n")
    broker.start()
    yield broker
    broker.stop()


def test_only_the_platform_user_gets_a_command_executed(tmp_path: Path,
                                                        acl_broker: Broker) -> None:
    modbus_port = free_port()
    config = site_config(tmp_path, acl_broker.port, modbus_port, gateway_id=GATEWAY)
    data = yaml.safe_load(config.read_text())
    (tmp_path / "mqtt-password").write_text(USERS[GATEWAY_USER] + "\n")
    data["mqtt"].update(username=GATEWAY_USER, password_file=str(tmp_path / "mqtt-password"))
    data["health"] = {"interval_s": 1}
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    sim = start_edge(["simulate", "-c", str(config)], tmp_path / "sim.log")
    wait_for_port(modbus_port)
    platform = Login(acl_broker.port, "platform", "reservoir/#")
    intruder = Login(acl_broker.port, "intruder", "#")
    anonymous = Login(acl_broker.port, None)
    gateway = start_edge(["run", "-c", str(config)], tmp_path / "gw.log")
    try:
        platform.wait_for(lambda p: len(p.on(f"{ROOT}/telemetry")) >= 1, 20, "telemetry")
        anonymous.wait_for(lambda a: bool(a.connack), 5, "an answer to the anonymous login")
        assert not any(anonymous.connack), "anonymous clients are refused"
        # A state-changing command from a user the ACL does not let write cmd/.
        intruder.command("reload_config", "from-intruder")
        platform.command("get_status", "from-platform")
        platform.wait_for(lambda p: any(m.get("id") == "from-platform"
                                        for m in p.on("/cmd/get_status/reply")), 15,
                          "the platform's reply")
        time.sleep(2)  # time enough for the intruder's command to be answered, if it ran
        assert not [m for m in platform.on("/reply") if m.get("id") == "from-intruder"]
        health = platform.on(f"{ROOT}/health")
        assert health and health[-1]["reloads"] == 0, "the intruder's reload never ran"
        assert intruder.messages == [], "the intruder reads nothing"
        # The gateway's user may write only under its own root.
        as_gateway = Login(acl_broker.port, GATEWAY_USER)
        as_gateway.wait_for(lambda c: bool(c.connack), 5, "the gateway user's login")
        as_gateway.client.publish("reservoir/test-site/other-gw/alarms", "{}",
                                  qos=1).wait_for_publish(5)
        as_gateway.command("reload_config", "gateway-to-itself")
        as_gateway.close()
        platform.command("reload_config", "platform-reload")
        platform.wait_for(lambda p: any(m.get("id") == "platform-reload"
                                        for m in p.on("/cmd/reload_config/reply")), 20,
                          "the platform's reload")
        reply = [m for m in platform.on("/cmd/reload_config/reply")
                 if m.get("id") == "platform-reload"][-1]
        assert reply["ok"] is True and reply["result"]["reloads"] == 1, reply
        assert not platform.on("other-gw/alarms"), "a gateway cannot write another root"
    finally:
        gateway.stop()
        sim.kill()
        for login in (platform, intruder, anonymous):
            login.close()
