"""Outbox channels registered again at a reload (edge/outbox.py ``open``): a channel that
stays keeps its place, a new one is sent what is committed from then on, one that goes
releases its messages; on a real store."""

from __future__ import annotations

import asyncio
from pathlib import Path

from edge.outbox import Outbox
from edge.store import Store, StoreWorker

MQTT = ("telemetry", "alarm", "event")


def test_a_reload_keeps_staying_channels_and_adds_and_removes_others(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = StoreWorker(Store(tmp_path / "edge.db"))
        try:
            outbox = Outbox(store)
            await outbox.open({"mqtt": MQTT, "centre-a": ("alarm",)})
            first = await outbox.enqueue("alarm", lambda seq: f'{{"seq":{seq}}}')
            mqtt, centre_a = outbox.channel("mqtt"), outbox.channel("centre-a")
            assert [m.seq for m in await mqtt.next_batch(10)] == [first]
            centre_a.acknowledge([first])  # queued, not yet written

            await outbox.open({"mqtt": MQTT, "centre-b": ("alarm",)})
            assert outbox.channel("mqtt") is mqtt, "the uplink keeps its cursor and counts"
            assert "centre-a" not in outbox.channels
            centre_b = outbox.channel("centre-b")
            assert centre_b.bit not in (mqtt.bit, centre_a.bit)
            assert await mqtt.next_batch(10) == [], "nothing handed to it twice"
            assert await centre_b.next_batch(10) == [], "a new centre gets no past"

            second = await outbox.enqueue("alarm", lambda seq: f'{{"seq":{seq}}}')
            assert [m.seq for m in await mqtt.next_batch(10)] == [second]
            assert [m.seq for m in await centre_b.next_batch(10)] == [second]
            # The first alarm is still the uplink's until it acknowledges it; nothing of
            # centre-a is left waiting.
            assert (await outbox.stats()).depth == 2
            assert (await centre_b.stats()).depth == 1
        finally:
            store.close()

    asyncio.run(scenario())
