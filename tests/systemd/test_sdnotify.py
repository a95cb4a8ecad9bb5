"""edge.sdnotify against real AF_UNIX datagram sockets, the way systemd listens."""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.sdnotify import SystemdNotifier, WatchdogGate, watchdog_interval_s

pytestmark = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="needs AF_UNIX sockets")


def _receiver(address: str | bytes) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(2.0)
    return sock


@pytest.fixture
def listener(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A bound socket at a filesystem path, advertised through NOTIFY_SOCKET."""
    path = tmp_path / "notify.sock"
    # AF_UNIX paths are limited to 107 bytes; fail loudly rather than bind somewhere else.
    assert len(os.fsencode(path)) < 108, f"tmp_path too long for a unix socket: {path}"
    sock = _receiver(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


def test_each_message_arrives_verbatim(listener: socket.socket) -> None:
    notifier = SystemdNotifier()
    assert notifier.enabled
    sends = [
        (notifier.ready, b"READY=1"),
        (lambda: notifier.ready("polling 3 buses"), b"READY=1\nSTATUS=polling 3 buses"),
        (lambda: notifier.status("uplink down, 12 queued"), b"STATUS=uplink down, 12 queued"),
        (notifier.watchdog, b"WATCHDOG=1"),
        (notifier.stopping, b"STOPPING=1"),
    ]
    for send, expected in sends:
        assert send() is True
        assert listener.recv(4096) == expected
    notifier.close()


def test_reloading_carries_monotonic_usec(listener: socket.socket) -> None:
    notifier = SystemdNotifier()
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert notifier.reloading() is True
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    first, second = listener.recv(4096).split(b"\n")
    assert first == b"RELOADING=1"
    name, _, value = second.partition(b"=")
    assert name == b"MONOTONIC_USEC"
    assert value.isdigit()
    assert before <= int(value) <= after


def test_newline_in_status_cannot_inject_fields(listener: socket.socket) -> None:
    assert SystemdNotifier().status("bus a ok\nREADY=1") is True
    assert listener.recv(4096) == b"STATUS=bus a ok READY=1"


def test_abstract_namespace_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"reservoir-edge-test-{uuid.uuid4().hex}"
    sock = _receiver(b"\0" + name.encode())
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", f"@{name}")
        notifier = SystemdNotifier()
        assert notifier.watchdog() is True
        assert sock.recv(4096) == b"WATCHDOG=1"
        assert notifier.ready("ok") is True
        assert sock.recv(4096) == b"READY=1\nSTATUS=ok"
    finally:
        sock.close()


def test_explicit_environ_overrides_process_env(
    listener: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    notifier = SystemdNotifier(environ={"NOTIFY_SOCKET": os.environ["NOTIFY_SOCKET"]})
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert notifier.stopping() is True
    assert listener.recv(4096) == b"STOPPING=1"


@pytest.mark.parametrize("value", [None, ""])
def test_absent_variable_is_a_silent_noop(
    value: str | None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    if value is None:
        monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    else:
        monkeypatch.setenv("NOTIFY_SOCKET", value)
    caplog.set_level(logging.DEBUG, logger="edge.sdnotify")
    notifier = SystemdNotifier()
    assert not notifier.enabled
    for send in (notifier.ready, notifier.watchdog, notifier.reloading, notifier.stopping):
        assert send() is False
    assert notifier.status("x") is False
    assert caplog.records == []


@pytest.mark.parametrize("value", ["vsock:2:1234", "relative/notify.sock", "@"])
def test_unusable_address_disables_with_one_warning(
    value: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", value)
    notifier = SystemdNotifier()
    assert not notifier.enabled
    assert notifier.watchdog() is False
    assert notifier.watchdog() is False
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


def test_vanished_socket_does_not_raise_and_logs_once(
    tmp_path: Path, listener: socket.socket, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = SystemdNotifier()
    assert notifier.ready() is True
    assert listener.recv(4096) == b"READY=1"

    listener.close()
    (tmp_path / "notify.sock").unlink()
    caplog.set_level(logging.INFO, logger="edge.sdnotify")
    for _ in range(3):
        assert notifier.watchdog() is False
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "carrying on" in warnings[0].getMessage()

    # PID 1 back (daemon-reexec binds the same path): pings flow again on the same notifier.
    revived = _receiver(str(tmp_path / "notify.sock"))
    try:
        assert notifier.watchdog() is True
        assert revived.recv(4096) == b"WATCHDOG=1"
    finally:
        revived.close()
    assert any(r.getMessage() == "sd_notify delivered again" for r in caplog.records)


def test_socket_path_that_is_not_a_socket_does_not_raise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bogus = tmp_path / "plain-file"
    bogus.write_text("")
    monkeypatch.setenv("NOTIFY_SOCKET", str(bogus))
    assert SystemdNotifier().ready() is False


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "1000"}, 0.0005),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "30s"}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "self"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "other"}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "garbage"}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    resolved = dict(env)
    if resolved.get("WATCHDOG_PID") == "self":
        resolved["WATCHDOG_PID"] = str(os.getpid())
    elif resolved.get("WATCHDOG_PID") == "other":
        resolved["WATCHDOG_PID"] = str(os.getpid() + 1)
    assert watchdog_interval_s(resolved) == expected


def test_watchdog_interval_reads_process_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "20000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert watchdog_interval_s() == 10.0


def test_gate_stale_source_blocks_until_unregistered() -> None:
    gate = WatchdogGate()
    gate.register("loop", now=0.0)
    gate.register("bus:rs485-1", now=0.0)
    gate.register("bus:modbus-tcp", now=0.0)
    assert gate.all_alive(5.0, max_age_s=10.0)

    gate.beat("loop", now=20.0)
    gate.beat("bus:modbus-tcp", now=19.0)
    # rs485-1 last beat at 0: hung on a serial read.
    assert not gate.all_alive(20.0, max_age_s=10.0)
    assert gate.stale(20.0, 10.0) == {"bus:rs485-1": 20.0}

    gate.unregister("bus:rs485-1")
    assert gate.all_alive(20.0, max_age_s=10.0)
    assert gate.sources() == ["bus:modbus-tcp", "loop"]


def test_gate_age_boundary_and_loop_staleness() -> None:
    gate = WatchdogGate()
    gate.register("loop", now=100.0)
    assert gate.all_alive(110.0, 10.0)  # exactly max_age old still counts as alive
    assert not gate.all_alive(110.001, 10.0)
    assert gate.stale(130.0, 10.0) == {"loop": 30.0}


def test_gate_ignores_beats_from_unregistered_sources() -> None:
    gate = WatchdogGate()
    gate.register("loop", now=0.0)
    gate.register("bus:old", now=0.0)
    gate.unregister("bus:old")
    # The removed bus task beats once more while it winds down: it must not come back.
    assert gate.beat("bus:old", now=1.0) is False
    assert gate.beat("loop", now=50.0) is True
    assert gate.sources() == ["loop"]
    assert gate.all_alive(55.0, 10.0)
    gate.unregister("never-registered")


def test_gate_reload_replaces_a_bus() -> None:
    gate = WatchdogGate()
    gate.register("loop", now=0.0)
    gate.register("bus:a", now=0.0)
    gate.beat("loop", now=30.0)
    gate.unregister("bus:a")
    gate.register("bus:a", now=30.0)  # same name, new task: starts with a fresh grace period
    assert gate.all_alive(35.0, 10.0)
    assert not gate.all_alive(45.0, 10.0)


def test_gate_defaults_to_the_monotonic_clock() -> None:
    gate = WatchdogGate()
    gate.register("loop")
    assert gate.all_alive(time.monotonic(), 5.0)
    assert not gate.all_alive(time.monotonic() + 60.0, 5.0)
    assert gate.beat("loop")


def test_gate_uses_injected_clock() -> None:
    ticks = iter([1000.0, 1004.0])
    gate = WatchdogGate(clock=lambda: next(ticks))
    gate.register("loop")
    gate.beat("loop")
    assert gate.stale(1020.0, 10.0) == {"loop": 16.0}


def test_empty_gate_is_alive() -> None:
    assert WatchdogGate().all_alive(0.0, 1.0)
