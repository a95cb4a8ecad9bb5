"""The daemon as systemd sees it: sd_notify messages, watchdog, SIGHUP reload, SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

import edge.buses as buses_module
from edge.config import load_config
from edge.gateway import Gateway
from tests.support import Broker, Recorder, free_port, site_config, start_edge, wait_for_port


class NotifySocket:
    """What systemd's end of NOTIFY_SOCKET receives."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._stop = False
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stop:
            with contextlib.suppress(TimeoutError):
                data = self.sock.recv(4096)
                self.messages.append((time.monotonic(), data.decode()))

    def lines(self) -> list[str]:
        return [line for _, m in self.messages for line in m.split("\n")]

    def wait_for(self, needle: str, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(needle in line for line in self.lines()):
                return
            time.sleep(0.05)
        raise AssertionError(f"no {needle!r} within {timeout}s; got {self.lines()[-8:]}")

    def close(self) -> None:
        self._stop = True
        self._thread.join()
        self.sock.close()


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_path / "notify.sock")
    yield sock
    sock.close()


def site(tmp_path: Path, broker: Broker, gateway_id: str) -> tuple[Path, int]:
    modbus_port = free_port()
    config = site_config(tmp_path, broker.port, modbus_port, interval=0.5,
                         gateway_id=gateway_id)
    data = yaml.safe_load(config.read_text())
    data["health"] = {"interval_s": 1}
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    return config, modbus_port


def test_notify_protocol_and_reload_under_load(tmp_path: Path, broker: Broker,
                                               notify: NotifySocket) -> None:
    config, modbus_port = site(tmp_path, broker, "gw-svc")
    sim = start_edge(["simulate", "-c", str(config)], tmp_path / "sim.log")
    wait_for_port(modbus_port)
    rec = Recorder(broker.port, "reservoir/test-site/gw-svc/#")
    env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "1000000"}
    gateway = start_edge(["run", "-c", str(config)], tmp_path / "gw.log", env)
    try:
        notify.wait_for("READY=1")
        notify.wait_for("STATUS=devices online 2/2")
        time.sleep(2)
        pings = [t for t, m in notify.messages if m == "WATCHDOG=1"]
        assert len(pings) >= 3, "a ping every WATCHDOG_USEC/2"

        # Reload under load: add a device and change a rule while readings flow.
        data = yaml.safe_load(config.read_text())
        data["devices"].append({"id": "piezo-2", "bus": "lan", "unit": 2,
                                "poll_interval_s": 0.5, "points": [
                                    {"id": "pressure", "unit": "kPa", "register": {
                                        "table": "input", "address": 10, "type": "int16"}}]})
        data["rules"][0]["hysteresis"] = 0.2
        config.write_text(yaml.safe_dump(data, sort_keys=False))
        before = len(rec.on("/telemetry"))
        gateway.signal(signal.SIGHUP)
        notify.wait_for("RELOADING=1")
        assert any(line.startswith("MONOTONIC_USEC=") for line in notify.lines())
        rec.wait_for(lambda r: any(x["device"] == "piezo-2" for m in r.on("/telemetry")
                                   for x in m["readings"]), 10, "the added device")
        level_device = [m for m in rec.on("/telemetry")[before:]
                        if m["readings"][0]["device"] == "level-1"]
        assert level_device, "the unchanged device kept reporting across the reload"
        ready_count = sum(1 for line in notify.lines() if line == "READY=1")
        assert ready_count >= 2, "READY=1 again after the reload"

        # An invalid config on SIGHUP changes nothing.
        good = config.read_text()
        config.write_text(good.replace("unit: 2", "unit: 999", 1))
        gateway.signal(signal.SIGHUP)
        time.sleep(1.5)
        assert "reload_refused" in gateway.output()
        count = len(rec.on("/telemetry"))
        rec.wait_for(lambda r: len(r.on("/telemetry")) > count + 3, 20, "polling goes on")
        assert any(x["device"] == "piezo-2" for m in rec.on("/telemetry")[count:]
                   for x in m["readings"])

        assert gateway.stop() == 0
        notify.wait_for("STOPPING=1", 5)
        rec.wait_for(lambda r: any(s.get("state") == "offline" for s in r.on("/status")), 5,
                     "offline")
    finally:
        gateway.kill()
        sim.kill()
        rec.close()


def test_watchdog_pings_stop_when_a_bus_task_hangs(tmp_path: Path, broker: Broker,
                                                   notify: NotifySocket,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    config, modbus_port = site(tmp_path, broker, "gw-hang")
    sim = start_edge(["simulate", "-c", str(config)], tmp_path / "sim.log")
    wait_for_port(modbus_port)
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify.path))
    monkeypatch.setenv("WATCHDOG_USEC", "400000")
    monkeypatch.setattr(buses_module, "BUS_STALL_S", 2.0)
    monkeypatch.setattr(buses_module, "BUS_STOP_TIMEOUT_S", 1.0)
    hang = asyncio.Event()
    hung_at: list[float] = []

    async def scenario() -> None:
        gateway = Gateway(load_config(config), config)
        task = asyncio.create_task(gateway.run())
        while not gateway.pollers:
            await asyncio.sleep(0.05)
        poller = gateway.pollers["lan"]
        original = poller.poll_device

        async def maybe_hang(device):  # type: ignore[no-untyped-def]
            if hang.is_set():
                await asyncio.Event().wait()  # a bus task stuck for good
            return await original(device)

        poller.poll_device = maybe_hang  # type: ignore[method-assign]  # the hang under test
        await asyncio.sleep(2)
        hang.set()
        hung_at.append(time.monotonic())
        await asyncio.sleep(5)
        gateway.request_stop()
        assert await asyncio.wait_for(task, 20) == 0, "a hung bus must not block shutdown"

    try:
        asyncio.run(scenario())
    finally:
        sim.kill()
    pings = [t for t, m in notify.messages if m == "WATCHDOG=1"]
    assert len(pings) >= 4, "pinged while healthy"
    # The bus's last beat is at most one poll interval (0.5 s) before the hang; after
    # BUS_STALL_S (2 s) more and one ping period (0.2 s) the pings stop for good.
    late = [t for t in pings if t > hung_at[0] + 0.5 + 2.0 + 0.2 + 0.3]
    assert late == [], f"{len(late)} pings after the bus hung"
    assert any(t < hung_at[0] for t in pings)
