"""``edge demo``: a simulated reservoir, a private broker and the gateway, on loopback.

Prints what a district platform subscribed to the gateway receives: readings as they are
polled, alarms as the simulated flood passes the flood-limit level, and (with the demo
site's notify section) each text the simulated modem sends and the siren switching; the
keeper's simulated phone replies "1" after 40 s.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from edge.pretty import print_message


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_port(port: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.1)
    return False


def _notify_demo(config: dict[str, Any], work: Path) -> list[str]:
    """The simulated modem moves to the demo's directory; the first contact's phone
    replies "1" after 40 s. Returns the simulator's arguments for that reply."""
    notify = config.get("notify") or {}
    if not notify.get("modem"):
        return []
    notify["modem"]["port"] = str(work / "modem")
    contacts = notify.get("contacts") or []
    return ["--sms-reply", f"40:{contacts[0]['phone']}:1"] if contacts else []


def run_demo(config_path: Path, seconds: float | None, faults: list[str] | None = None) -> int:
    mosquitto = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if mosquitto is None:
        print("The demo needs the Mosquitto MQTT broker. Install it with:\n"
              "  sudo apt-get install -y mosquitto\n"
              "(scripts/demo does this for you on Debian.)", file=sys.stderr)
        return 1
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    work = Path(tempfile.mkdtemp(prefix="reservoir-edge-demo-"))
    mqtt_port, modbus_port = _free_port(), _free_port()
    config["mqtt"]["port"] = mqtt_port
    config["store"]["path"] = str(work / "demo.db")
    for bus in config["buses"]:
        if bus["type"] == "modbus_tcp":
            bus["port"] = modbus_port
    replies = _notify_demo(config, work)
    site_file = work / "demo.yaml"
    site_file.write_text(yaml.safe_dump(config, sort_keys=False))
    (work / "mosquitto.conf").write_text(
        f"listener {mqtt_port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    root = f"{config['mqtt']['topic_prefix']}/{config['site']['id']}/{config['gateway']['id']}"
    edge = [sys.executable, "-m", "edge"]
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(args: list[str], log: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(args, stdout=(work / log).open("wb"), stderr=subprocess.STDOUT)
        procs.append(proc)
        return proc

    print(f"reservoir-edge demo (work files in {work})")
    try:
        spawn([mosquitto, "-c", str(work / "mosquitto.conf")], "mosquitto.log")
        if not _wait_for_port(mqtt_port):
            print(f"mosquitto did not start; see {work / 'mosquitto.log'}", file=sys.stderr)
            return 1
        fault_args = [arg for fault in faults or [] for arg in ("--fault", fault)]
        spawn([*edge, "simulate", "-c", str(site_file), "--period-s", "60", *fault_args,
               *replies], "simulator.log")
        _wait_for_port(modbus_port)
        print(f"broker 127.0.0.1:{mqtt_port}  simulator 127.0.0.1:{modbus_port}  "
              f"subscribed to {root}/#  (Ctrl-C to stop)\n")
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="demo-platform")
        client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{root}/#", qos=1)
        client.on_message = lambda c, u, m: print_message(m.topic, m.payload)
        client.connect("127.0.0.1", mqtt_port)
        client.loop_start()
        gateway = spawn([*edge, "run", "-c", str(site_file)], "gateway.log")
        deadline = None if seconds is None else time.monotonic() + seconds
        with contextlib.suppress(KeyboardInterrupt):
            while deadline is None or time.monotonic() < deadline:
                if gateway.poll() is not None:
                    print(f"the gateway stopped; see {work / 'gateway.log'}", file=sys.stderr)
                    return 1
                time.sleep(0.2)
        print("\nstopping the gateway (it publishes 'offline' before it exits)...")
        gateway.terminate()
        gateway.wait(15)
        time.sleep(0.5)
        client.loop_stop()
        client.disconnect()
        return 0
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(5)
