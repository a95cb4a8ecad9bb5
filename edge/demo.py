"""``edge demo``: a simulated reservoir, a private broker and the gateway, on loopback.

Prints what a district platform subscribed to the gateway receives: readings as they are
polled and alarms as the simulated flood passes the flood-limit level; with the demo's
``web:`` section, also the address of the keeper's page (docs/web.md); with its
``notify`` section, each text the simulated modem sends and the siren switching (the
keeper's simulated phone replies "1" after 40 s); with its ``sl651`` section, each report
the simulated provincial centre confirms, as that centre decoded it.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from edge.pretty import print_message, sl651_line


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


DEMO_PIN = "246810"  # config/demo.yaml's pin_hash is its hash; a real site's PIN is its own


def _pin_note(web: dict[str, object]) -> str:
    """Say the PIN only when the configuration still has the demo's."""
    from edge.web.pin import parse_pin_hash, verify_pin

    stored = web.get("pin_hash")
    if isinstance(stored, str) and verify_pin(DEMO_PIN, parse_pin_hash(stored)):
        return f"  (the demo's PIN to acknowledge alarms: {DEMO_PIN})"
    return ""


def _on_loopback(config: dict[str, Any], work: Path) -> tuple[int, int, str | None]:
    """Free ports on 127.0.0.1 for the broker, the Modbus TCP simulator and the keeper's
    page (when configured), and a store in the work directory; returns them."""
    mqtt_port, modbus_port = _free_port(), _free_port()
    config["mqtt"]["port"] = mqtt_port
    config["store"]["path"] = str(work / "demo.db")
    for bus in config["buses"]:
        if bus["type"] == "modbus_tcp":
            bus["port"] = modbus_port
    page = None
    for centre in (config.get("sl651") or {}).get("centres", []):
        centre["port"] = _free_port()  # `edge simulate` serves each loopback centre
    if config.get("web"):
        page = f"127.0.0.1:{_free_port()}"
        config["web"]["listen"] = page
    return mqtt_port, modbus_port, page


def _follow_sl651(path: Path, stop: threading.Event) -> None:
    """Print each report the simulated centre appends to ``path`` (JSON lines) until
    ``stop``, and once more after it (what came just before the stop); a line still
    being written is read at the next turn."""
    offset = 0
    while True:
        stopping = stop.wait(0.2)
        offset = _print_new_reports(path, offset)
        if stopping:
            return


def _print_new_reports(path: Path, offset: int) -> int:
    if not path.exists():
        return offset
    with path.open("rb") as log:
        log.seek(offset)
        for line in log:
            if not line.endswith(b"\n"):
                break
            offset += len(line)
            with contextlib.suppress(ValueError):
                print(sl651_line(json.loads(line)), flush=True)
    return offset


def _print_sl651_reports(config: dict[str, Any],
                         work: Path) -> tuple[list[str], threading.Event]:
    """With an ``sl651`` section: the simulator's arguments that make its centre log each
    report, and a thread printing them (stopped by the event returned)."""
    stop = threading.Event()
    if not config.get("sl651"):
        return [], stop
    reports = work / "sl651-reports.jsonl"
    threading.Thread(target=_follow_sl651, args=(reports, stop), daemon=True).start()
    return ["--sl651-log", str(reports)], stop


def _run_gateway(gateway: subprocess.Popen[bytes], seconds: float | None, log: Path) -> int:
    """Until Ctrl-C or ``seconds``, then stop the gateway as systemd would (SIGTERM)."""
    deadline = None if seconds is None else time.monotonic() + seconds
    with contextlib.suppress(KeyboardInterrupt):
        while deadline is None or time.monotonic() < deadline:
            if gateway.poll() is not None:
                print(f"the gateway stopped; see {log}", file=sys.stderr)
                return 1
            time.sleep(0.2)
    print("\nstopping the gateway (it publishes 'offline' before it exits)...")
    gateway.terminate()
    gateway.wait(15)
    time.sleep(0.5)  # the subscriber prints the offline status
    return 0
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
    mqtt_port, modbus_port, page = _on_loopback(config, work)
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
        centre_args, stop_following = _print_sl651_reports(config, work)
        spawn([*edge, "simulate", "-c", str(site_file), "--period-s", "60", *fault_args,
               *replies, *centre_args], "simulator.log")
        _wait_for_port(modbus_port)
        print(f"broker 127.0.0.1:{mqtt_port}  simulator 127.0.0.1:{modbus_port}  "
              f"subscribed to {root}/#  (Ctrl-C to stop)")
        if page is not None:
            print(f"keeper's page: http://{page}/{_pin_note(config['web'])}")
        print()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="demo-platform")
        client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{root}/#", qos=1)
        client.on_message = lambda c, u, m: print_message(m.topic, m.payload)
        client.connect("127.0.0.1", mqtt_port)
        client.loop_start()
        gateway = spawn([*edge, "run", "-c", str(site_file)], "gateway.log")
        code = _run_gateway(gateway, seconds, work / "gateway.log")
        stop_following.set()
        client.loop_stop()
        client.disconnect()
        return code
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(5)
