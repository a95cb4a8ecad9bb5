"""The commands the unit runs against a real gateway process: ExecReload's ``edge reload``,
and the ``STATUS=`` line ``systemctl status`` shows (issue 20, items 2 and 4)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support import (
    Broker,
    EdgeProcess,
    free_port,
    run_edge,
    site_config,
    start_edge,
    wait_for_port,
)


def _wait_in_log(process: EdgeProcess, needle: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if needle in process.output():
            return
        assert process.proc.poll() is None, process.output()[-2000:]
        time.sleep(0.1)
    raise AssertionError(f"{needle!r} not logged within {timeout}s: {process.output()[-2000:]}")


class StatusLines:
    """systemd's end of NOTIFY_SOCKET, keeping the STATUS= texts in order of arrival."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.texts: list[str] = []
        self._stop = False
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stop:
            with contextlib.suppress(TimeoutError):
                for field in self.sock.recv(4096).decode().split("\n"):
                    if field.startswith("STATUS="):
                        self.texts.append(field.removeprefix("STATUS="))

    def wait_for(self, text: str, after: int, timeout: float) -> int:
        """Index of the first ``text`` at or past index ``after``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for index in range(after, len(self.texts)):
                if text in self.texts[index]:
                    return index
            time.sleep(0.05)
        raise AssertionError(f"no STATUS with {text!r} within {timeout}s: {self.texts[-6:]}")

    def close(self) -> None:
        self._stop = True
        self._thread.join()
        self.sock.close()


@pytest.fixture
def status_lines(tmp_path: Path) -> Iterator[StatusLines]:
    lines = StatusLines(tmp_path / "notify.sock")
    yield lines
    lines.close()


def test_reload_command_checks_then_signals_the_daemon(tmp_path: Path, broker: Broker) -> None:
    config = site_config(tmp_path, broker.port, free_port())
    gateway = start_edge(["run", "-c", str(config)], tmp_path / "gw.log")
    try:
        _wait_in_log(gateway, "gateway_started")
        pid = str(gateway.proc.pid)
        data = yaml.safe_load(config.read_text())
        data["rules"][0]["hysteresis"] = 0.2
        config.write_text(yaml.safe_dump(data, sort_keys=False))
        good = run_edge(["reload", "-c", str(config), "--pid", pid])
        assert good.returncode == 0, good.stderr
        assert f"SIGHUP sent to {pid}" in good.stdout
        _wait_in_log(gateway, "config_reloaded")
        # Parsed in a process of its own (edge/daemon_config.py), not in the daemon.
        assert "reload_parsed_in_place" not in gateway.output()

        # A refused configuration never reaches the daemon: no SIGHUP, so no reload_refused.
        config.write_text(config.read_text().replace("unit: 2", "unit: 999", 1))
        bad = run_edge(["reload", "-c", str(config), "--pid", pid])
        assert bad.returncode == 2
        assert f"process {pid} not signalled" in bad.stderr
        assert "devices[1].unit" in bad.stderr
        assert gateway.proc.poll() is None
        assert gateway.stop() == 0
        assert "reload_refused" not in gateway.output()
    finally:
        gateway.kill()


def test_reload_command_names_a_process_it_cannot_signal(tmp_path: Path) -> None:
    config = site_config(tmp_path, free_port(), free_port())
    # Beyond the kernel's pid_max (at most 2**22): no process can have it.
    result = run_edge(["reload", "-c", str(config), "--pid", str(2**22 + 1)])
    assert result.returncode == 1
    assert f"cannot signal process {2**22 + 1}: No such process" in result.stderr


def test_status_line_follows_devices_between_health_intervals(
        tmp_path: Path, broker: Broker, status_lines: StatusLines) -> None:
    modbus_port = free_port()
    config = site_config(tmp_path, broker.port, modbus_port, interval=0.5)
    data = yaml.safe_load(config.read_text())
    # Far longer than the test: any refresh it sees comes from a change of state.
    data["health"] = {"interval_s": 3600}
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    sim = start_edge(["simulate", "-c", str(config)], tmp_path / "sim.log")
    wait_for_port(modbus_port)
    env = {"NOTIFY_SOCKET": str(tmp_path / "notify.sock")}
    gateway = start_edge(["run", "-c", str(config)], tmp_path / "gw.log", env)
    try:
        online = status_lines.wait_for("devices online 2/2", 0, 60)
        sim.stop()
        status_lines.wait_for("devices online 0/2", online + 1, 60)
        assert gateway.stop() == 0
    finally:
        gateway.kill()
        sim.kill()
