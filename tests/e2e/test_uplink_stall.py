"""A broker that answers keep-alives but never acknowledges: the in-flight deadline.

The stalling broker is a real socket server (tests/fake_broker.py); once it is gone a
real private Mosquitto takes its port, and every alarm the stalled broker held arrives
there with its own seq.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

from structlog.testing import capture_logs

from edge.channels.mqtt import KINDS, MqttChannel, MqttConfig
from edge.outbox import Outbox
from edge.store import Store, StoreWorker
from tests.fake_broker import FakeBroker
from tests.support import Broker, Recorder

ROOT = "reservoir/test-site/gw-stall"
ALARMS = 5


async def until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


async def open_outbox(tmp_path: Path) -> Outbox:
    outbox = Outbox(StoreWorker(Store(tmp_path / "edge.db")))
    await outbox.open({MqttChannel.name: KINDS})
    return outbox


def channel(outbox: Outbox, port: int) -> MqttChannel:
    config = MqttConfig(host="127.0.0.1", port=port, keepalive_s=5, inflight_deadline_s=1.5,
                        reconnect_min_s=0.2, reconnect_max_s=0.5)
    return MqttChannel(config, ROOT, "gw-stall", outbox.channel(MqttChannel.name))


def test_a_broker_that_never_acks_stalls_the_uplink_and_the_alarms_arrive_later(
        tmp_path: Path) -> None:
    asyncio.run(stall_then_deliver(tmp_path))


async def stall_then_deliver(tmp_path: Path) -> None:
    stalling = FakeBroker("stall")
    await stalling.start()
    outbox = await open_outbox(tmp_path)
    seqs = [await outbox.enqueue("alarm", lambda seq: json.dumps({"seq": seq, "rule": "t"}))
            for _ in range(ALARMS)]
    up = channel(outbox, stalling.port)
    acks = asyncio.create_task(outbox.run_ack_writer())
    with capture_logs() as logs:
        running = asyncio.create_task(up.run())
        try:
            # Two deadlines passed: two drops, one stalled state, one log line.
            await until(lambda: up.health()["stalls"] >= 2 and stalling.connections >= 3,
                        30, "the uplink to give up on the stalled broker twice")
            assert up.health()["stalled"] is True
            alarms = [p for p in stalling.publishes if p.topic == f"{ROOT}/alarms"]
            first = sorted(json.loads(p.payload)["seq"] for p in alarms if p.connection == 1)
            again = [p for p in alarms if p.connection == 2]
            assert first == seqs
            # The same seqs again on the next connection, flagged as duplicates.
            assert sorted(json.loads(p.payload)["seq"] for p in again) == seqs
            assert all(p.dup for p in again)
            # Nothing left the outbox without its PUBACK.
            assert (await outbox.stats()).depth == ALARMS
            await stalling.stop()
            await deliver_to_mosquitto(tmp_path, stalling.port, up, outbox, seqs)
        finally:
            await up.stop(timeout_s=2)
            running.cancel()
            acks.cancel()
            await asyncio.gather(running, acks, return_exceptions=True)
    stalled = [e for e in logs if e["event"] == "mqtt_uplink_stalled"]
    resumed = [e for e in logs if e["event"] == "mqtt_uplink_resumed"]
    assert len(stalled) == 1, stalled
    assert stalled[0]["oldest_seq"] == seqs[0]
    assert len(resumed) == 1


async def deliver_to_mosquitto(tmp_path: Path, port: int, up: MqttChannel, outbox: Outbox,
                               seqs: list[int]) -> None:
    """A working broker on the stalled one's port: every held alarm arrives, no seq lost."""
    broker = Broker(tmp_path, port=port)
    await asyncio.to_thread(broker.start)
    try:
        recorder = await asyncio.to_thread(Recorder, port, f"{ROOT}/alarms")
        await until(lambda: sorted({m["seq"] for m in recorder.on("/alarms")}) == seqs,
                    30, "every alarm at the working broker")
        await until(lambda: not up.health()["stalled"], 10, "the stall to clear")
        # The subscriber may see the last alarms before the gateway has their PUBACKs.
        await until(lambda: up.health_figures.acked >= len(seqs), 10, "every PUBACK")
        await outbox.flush_acks(delete_now=True)
        assert (await outbox.stats()).depth == 0
        recorder.close()
    finally:
        await asyncio.to_thread(broker.stop)
