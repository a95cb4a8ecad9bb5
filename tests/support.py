"""Real parts for tests: a private Mosquitto, an MQTT recorder, gateway processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


class Broker:
    """A private mosquitto on a free loopback port, stoppable to simulate outages."""

    def __init__(self, workdir: Path, port: int | None = None, persistent: bool = False,
                 extra: str = "") -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.conf = workdir / f"mosquitto-{self.port}.conf"
        # Persistence keeps sessions and queued QoS 1 messages across a restart, as a
        # production broker would.
        store = (f"persistence true\npersistence_location {workdir}/\n"
                 f"persistence_file mosquitto-{self.port}.db\n" if persistent
                 else "persistence false\n")
        # Started as root, mosquitto switches to its own user and then cannot read the
        # test's private files (certificates, persistence): keep the test's user.
        user = "user root\n" if os.geteuid() == 0 else ""
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n{user}{store}"
            f"max_queued_messages 100000\n{extra}"
        )
        self.log = workdir / f"mosquitto-{self.port}.log"

    def start(self) -> None:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = subprocess.Popen([exe, "-c", str(self.conf)],
                                     stdout=self.log.open("ab"), stderr=subprocess.STDOUT)
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a frozen broker cannot handle SIGTERM
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def freeze(self) -> None:
        """SIGSTOP: the broker keeps the TCP connection open but acknowledges nothing."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def crash(self) -> None:
        """SIGKILL: connections drop mid-flight and unsaved broker state is lost."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)


class Recorder:
    """A platform-side subscriber that records every message it receives."""

    def __init__(self, port: int, topic: str = "#", persistent: bool = False,
                 tls: tuple[Path, Path, Path] | None = None, protocol: int = 4) -> None:
        self.messages: list[tuple[str, dict[str, Any], bool]] = []
        self._cond = threading.Condition()
        # A persistent session: the platform gets what the broker queued while this
        # subscriber was reconnecting after a broker restart.
        if protocol == 5:
            self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                      client_id=f"rec-{time.time_ns()}", protocol=mqtt.MQTTv5)
        else:
            self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                      client_id=f"rec-{time.time_ns()}",
                                      clean_session=not persistent)
        if tls is not None:
            ca, cert, key = tls
            self.client.tls_set(ca_certs=str(ca), certfile=str(cert), keyfile=str(key))
        self.client.reconnect_delay_set(0.2, 1)  # type: ignore[arg-type]
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.properties: list[Any] = []
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            body = json.loads(msg.payload)
        except ValueError:
            body = {"_raw": msg.payload.decode(errors="replace")}
        with self._cond:
            self.properties.append(getattr(msg, "properties", None))
            self.messages.append((msg.topic, body, bool(msg.retain)))
            self._cond.notify_all()

    def on(self, suffix: str) -> list[dict[str, Any]]:
        with self._cond:
            return [b for t, b, _ in self.messages if t.endswith(suffix)]

    def wait_for(self, predicate: Callable[[Recorder], bool], timeout: float,
                 what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    topics = [t for t, _, _ in self.messages][-10:]
                    raise AssertionError(f"timed out after {timeout}s waiting for {what}; "
                                         f"last topics: {topics}")
                self._cond.wait(min(remaining, 0.2))

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def retained_status(port: int, root: str, timeout: float = 5.0) -> dict[str, Any]:
    """What a platform that subscribes now is told about the gateway's status."""
    rec = Recorder(port, f"{root}/status")
    try:
        rec.wait_for(lambda r: bool(r.messages), timeout, "retained status")
        _topic, body, retained = rec.messages[0]
        assert retained, "status must be retained"
        return body
    finally:
        rec.close()


def readings(rec: Recorder) -> list[dict[str, Any]]:
    return [r for m in rec.on("/telemetry") for r in m["readings"]]


@dataclass
class EdgeProcess:
    proc: subprocess.Popen[bytes]
    log: Path

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start_edge(args: list[str], log: Path, env: dict[str, str] | None = None) -> EdgeProcess:
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = str(REPO) + os.pathsep + full_env.get("PYTHONPATH", "")
    proc = subprocess.Popen([sys.executable, "-m", "edge", *args], cwd=REPO,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT, env=full_env)
    return EdgeProcess(proc, log)


def run_edge(args: list[str], timeout: float = 60,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {}), "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "edge", *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def round_window_ms(interval_s: float) -> float:
    """A commit window of one round: what a large site's automatic window is."""
    return min(250.0, interval_s * 1000 / 4)


def site_config(tmp: Path, mqtt_port: int, modbus_port: int, *, interval: float = 0.5,
                rules: list[dict[str, Any]] | None = None,
                extra_devices: list[dict[str, Any]] | None = None,
                gateway_id: str = "gw-test",
                mqtt_extra: dict[str, Any] | None = None,
                commit_window_ms: float | None = None) -> Path:
    """A small site: a level logger and a piezometer reader on one Modbus TCP bus.

    Its automatic commit window gathers rounds (three points a round is a small site
    polled fast, edge/commitwindow.py); a test that counts messages as polls chooses a
    window of one round, ``round_window_ms(interval)``."""
    config: dict[str, Any] = {
        "site": {"id": "test-site", "name": "Test reservoir", "timezone": "Asia/Shanghai",
                 "levels": {"flood_limit": 123.5, "design_flood": 124.8, "crest": 126.0}},
        "gateway": {"id": gateway_id},
        "mqtt": {"host": "127.0.0.1", "port": mqtt_port, "topic_prefix": "reservoir",
                 "keepalive_s": 5, **(mqtt_extra or {})},
        "store": {"path": str(tmp / "edge.db"), **(
            {} if commit_window_ms is None else {"commit_window_ms": commit_window_ms})},
        "buses": [{"id": "lan", "type": "modbus_tcp", "host": "127.0.0.1", "port": modbus_port,
                   "timeout_s": 0.5}],
        "devices": [
            {"id": "level-1", "bus": "lan", "unit": 1, "poll_interval_s": interval,
             "points": [
                 {"id": "water_level", "quantity": "water_level", "unit": "m",
                  "register": {"table": "holding", "address": 0, "type": "float32"}},
                 {"id": "rain_counter", "quantity": "rainfall_counter", "unit": "tips",
                  "register": {"table": "holding", "address": 2, "type": "uint16"}},
             ]},
            {"id": "piezo-1", "bus": "lan", "unit": 2, "poll_interval_s": interval,
             "points": [
                 {"id": "pressure", "quantity": "seepage_pressure", "unit": "kPa",
                  "register": {"table": "input", "address": 10, "type": "int32",
                               "word_order": "little"}, "scale": 0.01},
             ]},
            *(extra_devices or []),
        ],
        "rules": rules if rules is not None else [
            {"id": "level-high", "type": "threshold", "point": "level-1/water_level",
             "high": [{"severity": "warning", "value": "flood_limit"},
                      {"severity": "alarm", "value": "design_flood"}],
             "hysteresis": 0.05},
        ],
    }
    path = tmp / "site.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
