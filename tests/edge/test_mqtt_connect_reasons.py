"""Every failed connection attempt is counted and its reason logged once per change; the
Last Will is stamped at each connection. Against real sockets and a real Mosquitto."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from edge.channels.mqtt import KINDS, MqttChannel, MqttConfig
from edge.outbox import Outbox
from edge.store import Store, StoreWorker
from tests.fake_broker import FakeBroker
from tests.support import Broker, Recorder, free_port

ROOT = "reservoir/test-site/gw-connect"


async def until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


async def make_channel(tmp_path: Path, port: int, **settings: Any) -> MqttChannel:
    outbox = Outbox(StoreWorker(Store(tmp_path / "edge.db")))
    await outbox.open({MqttChannel.name: KINDS})
    config = MqttConfig(host="127.0.0.1", port=port, keepalive_s=5, reconnect_min_s=0.1,
                        reconnect_max_s=0.2, **settings)
    return MqttChannel(config, ROOT, "gw-connect", outbox.channel(MqttChannel.name))


async def failures_against(tmp_path: Path, mode: str | None, attempts: int = 3,
                           **settings: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Health and the connect-failure log events after at least ``attempts`` failed
    attempts against a server in ``mode`` (None: a port nothing listens on)."""
    server = FakeBroker(mode) if mode else None
    if server is not None:
        await server.start()
    port = server.port if server is not None else free_port()
    up = await make_channel(tmp_path, port, **settings)
    with capture_logs() as logs:
        running = asyncio.create_task(up.run())
        try:
            await until(lambda: up.health()["connect_failures"] >= attempts, 45,
                        f"{attempts} failed connection attempts")
        finally:
            await up.stop(timeout_s=1)
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
            if server is not None:
                await server.stop()
    return up.health(), [e for e in logs if e["event"] == "mqtt_connect_failed"]


@pytest.mark.parametrize(("mode", "reason", "detail"), [
    ("close", "closed_before_connack", "closed the connection before its CONNACK"),
    ("refuse", "refused", "Not authorized"),
    (None, "connection_refused", "Connection refused"),
], ids=["closes-before-connack", "connack-refuses", "nothing-listens"])
def test_each_failed_attempt_is_counted_and_logged_once_with_its_reason(
        tmp_path: Path, mode: str | None, reason: str, detail: str) -> None:
    health, logged = asyncio.run(failures_against(tmp_path, mode))
    assert health["connected"] is False and health["connects"] == 0
    assert health["last_connect_failure"]["reason"] == reason
    assert detail.lower() in health["last_connect_failure"]["detail"].lower()
    # The same failure again and again is one line, however many attempts.
    assert len(logged) == 1, logged
    assert logged[0]["reason"] == reason and logged[0]["failures"] == 1


def test_a_broker_that_accepts_but_never_answers_connect_is_no_connack(tmp_path: Path) -> None:
    """A half-dead broker (a hung process behind a listening socket, a proxy that lost
    its upstream): each attempt ends after the keep-alive, as no_connack, not as a
    network or refused failure (5 s, the shortest keep-alive the config allows)."""
    health, logged = asyncio.run(failures_against(tmp_path, "silent", attempts=2))
    assert health["connected"] is False and health["connects"] == 0
    assert health["last_connect_failure"]["reason"] == "no_connack"
    assert [e["reason"] for e in logged] == ["no_connack"]


def test_a_host_whose_listen_queue_is_full_is_a_timeout(tmp_path: Path) -> None:
    """A broker host that takes no more connections (its accept queue full, SYNs
    dropped): the TCP connect times out (paho's 5 s), reason timeout."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = [socket.socket() for _ in range(3)]  # nobody accepts them: the queue fills
    for filler in fillers:
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
    try:
        health, logged = asyncio.run(full_queue_failures(tmp_path, port))
    finally:
        for sock in (*fillers, listener):
            sock.close()
    assert health["connected"] is False and health["connects"] == 0
    assert health["last_connect_failure"]["reason"] == "timeout"
    assert [e["reason"] for e in logged] == ["timeout"]


async def full_queue_failures(tmp_path: Path,
                              port: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    up = await make_channel(tmp_path, port)
    with capture_logs() as logs:
        running = asyncio.create_task(up.run())
        try:
            await until(lambda: up.health()["connect_failures"] >= 2, 45,
                        "two failed connection attempts")
        finally:
            await up.stop(timeout_s=1)
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
    return up.health(), [e for e in logs if e["event"] == "mqtt_connect_failed"]


def test_a_tls_handshake_with_a_plain_broker_is_a_tls_failure(tmp_path: Path) -> None:
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=test-ca", "-keyout", "ca.key", "-out", "ca.crt"],
                   cwd=tmp_path, check=True, capture_output=True)
    health, logged = asyncio.run(failures_against(
        tmp_path, "close", tls={"ca_file": tmp_path / "ca.crt"}))
    assert health["last_connect_failure"]["reason"] == "tls"
    assert [e["reason"] for e in logged] == ["tls"]


def test_the_reason_is_logged_again_when_it_changes_and_cleared_by_a_connect(
        tmp_path: Path) -> None:
    asyncio.run(reason_changes(tmp_path))


async def reason_changes(tmp_path: Path) -> None:
    server = FakeBroker("close")
    await server.start()
    up = await make_channel(tmp_path, server.port)
    with capture_logs() as logs:
        running = asyncio.create_task(up.run())
        try:
            await until(lambda: up.health()["connect_failures"] >= 2, 30, "two failures")
            server.mode = "refuse"
            await until(lambda: (up.health()["last_connect_failure"] or {}).get("reason")
                        == "refused", 30, "a refusal")
            server.mode = "ack"
            await until(lambda: up.health()["connected"], 30, "a connection")
            assert up.health()["last_connect_failure"] is None
        finally:
            await up.stop(timeout_s=1)
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
            await server.stop()
    logged = [e["reason"] for e in logs if e["event"] == "mqtt_connect_failed"]
    assert logged == ["closed_before_connack", "refused"]


def test_the_last_will_carries_the_time_of_the_last_connection(tmp_path: Path) -> None:
    asyncio.run(will_after_reconnect(tmp_path))


async def will_after_reconnect(tmp_path: Path) -> None:
    broker = Broker(tmp_path)
    await asyncio.to_thread(broker.start)
    up = await make_channel(tmp_path, broker.port)
    running = asyncio.create_task(up.run())
    recorder: Recorder | None = None
    try:
        await until(lambda: up.health()["connected"], 15, "the first connection")
        await asyncio.sleep(1.1)  # the reconnect's time must differ from the first's
        await asyncio.to_thread(broker.stop)
        await until(lambda: not up.health()["connected"], 15, "the disconnect")
        restarted_ms = time.time_ns() // 1_000_000
        await asyncio.to_thread(broker.start)
        await until(lambda: up.health()["connects"] == 2, 15, "the reconnection")
        recorder = await asyncio.to_thread(Recorder, broker.port, f"{ROOT}/status")
        # The gateway dies: its connection ends without a DISCONNECT, as under kill -9.
        await asyncio.to_thread(up.client.loop_stop)
        sock = up.client.socket()
        assert sock is not None
        sock.close()
        await until(lambda: any(m["state"] == "offline" for m in recorder.on("/status")),
                    15, "the Last Will")
        will = [m for m in recorder.on("/status") if m["state"] == "offline"][-1]
        assert will["ts"] >= restarted_ms
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        if recorder is not None:
            recorder.close()
        await asyncio.to_thread(broker.stop)
