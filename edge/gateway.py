"""The daemon: one event loop owning every stage of drivers → store → rules → uplink.

Bus tasks hand each device's poll result to a bounded queue; a single pipeline task runs
the rules over it and commits readings, telemetry and alarm transitions to the store in
one transaction; the uplink drains the outbox. Acquisition never waits for the uplink.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

import structlog

from drivers.registry import Poller, make_poller
from edge.config import LoadedConfig
from edge.model import PollResult
from edge.payloads import alarm_payload, telemetry_payload
from edge.store import Store, StoreWorker
from edge.uplink import MqttUplink
from rules.alarms import ActiveAlarm
from rules.engine import RuleEngine

log = structlog.get_logger("edge.gateway")

SHUTDOWN_DRAIN_S = 5.0


class Gateway:
    def __init__(self, loaded: LoadedConfig) -> None:
        self.loaded = loaded
        self.settings = loaded.settings
        self._queue: asyncio.Queue[PollResult | None] = asyncio.Queue(maxsize=256)
        self._stop = asyncio.Event()
        self.store: StoreWorker | None = None
        self.uplink: MqttUplink | None = None
        self.engine: RuleEngine | None = None
        self.pollers: dict[str, Poller] = {}

    def request_stop(self) -> None:
        self._stop.set()

    async def _enqueue(self, result: PollResult) -> None:
        await self._queue.put(result)

    async def _pipeline(self) -> None:
        assert self.store is not None and self.engine is not None and self.uplink is not None
        while True:
            result = await self._queue.get()
            if result is None:
                return
            evaluation = self.engine.evaluate(result.readings)
            try:
                await self.store.call(self.store.store.commit_cycle, evaluation.readings,
                                      evaluation.transitions, telemetry_payload, alarm_payload)
            except Exception:
                log.exception("store_commit_failed", device=result.device,
                              readings=len(result.readings))
                continue
            self.uplink.notify()

    async def run(self) -> int:
        settings = self.settings
        store = Store(settings.store.path, settings.store.synchronous)
        self.store = StoreWorker(store)
        active = [
            ActiveAlarm(a.alarm_id, a.rule, a.device, a.point, a.severity,  # type: ignore[arg-type]
                        a.side, a.limit, a.acked)
            for a in await self.store.call(store.active_alarms)
        ]
        self.engine = RuleEngine(settings, active)
        self.uplink = MqttUplink(settings, self.store)
        for bus in settings.buses:
            devices = [d for d in settings.devices if d.bus == bus.id]
            if devices:
                self.pollers[bus.id] = make_poller(bus, devices, self._enqueue)

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        log.info("gateway_started", site=settings.site.id, gateway=settings.gateway.id,
                 config=self.loaded.digest, buses=len(self.pollers),
                 devices=len(settings.devices), rules=len(settings.rules),
                 outbox_seq=store.last_seq)

        uplink_task = asyncio.create_task(self.uplink.run(), name="uplink")
        pipeline_task = asyncio.create_task(self._pipeline(), name="pipeline")
        bus_tasks = [asyncio.create_task(p.run(), name=f"bus:{bus_id}")
                     for bus_id, p in self.pollers.items()]

        await self._stop.wait()
        log.info("gateway_stopping")
        for poller in self.pollers.values():
            poller.stop()
        await asyncio.gather(*bus_tasks, return_exceptions=True)
        await self._queue.put(None)
        await pipeline_task
        await self.uplink.drain(SHUTDOWN_DRAIN_S)
        await self.uplink.stop()
        uplink_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await uplink_task
        self.store.close()
        log.info("gateway_stopped", outbox_seq=store.last_seq)
        return 0
