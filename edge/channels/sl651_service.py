"""The SL 651 service: the reporter and one link per centre (see edge/channels/sl651.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import structlog

from edge.channels import sl651_record as record
from edge.channels.sl651_codec import Function
from edge.channels.sl651_link import CentreLink
from edge.channels.sl651_reporter import ALARMS_CHANNEL, Reporter
from vocab.waits import stop_tasks

if TYPE_CHECKING:
    from edge.config import GatewaySettings
    from edge.ports import Ports

log = structlog.get_logger("edge.channels.sl651")

RESTART_S = 5.0  # a loop that failed unexpectedly starts again after this


class Sl651Service:
    name = "sl651"

    def __init__(self, settings: GatewaySettings, ports: Ports) -> None:
        config = settings.sl651
        assert config is not None, "built only for a site with an sl651 section"
        self.config = config
        self.ports = ports
        self.reporter = Reporter(config, ports.outbox, lambda: ports.pipeline.latest)
        # The gateway registers a centre's outbox channel before it starts the service, at
        # start and at a reload (edge/gateway.py); one missing (the store failed at that
        # reload) waits for the next start, and says so.
        registered = ports.outbox.channels
        self.links = [CentreLink(config, centre, registered[name],
                                 lambda: self.reporter.snapshot(Function.QUERY_REALTIME),
                                 ports.store, settings.store.retention_days)
                      for centre, name in zip(config.centres, config.channel_names(),
                                              strict=True) if name in registered]
        self.waiting = [name for name in config.channel_names() if name not in registered]
        self._tasks: list[asyncio.Task[None]] = []

    async def run(self) -> None:
        await self.ports.store.run(record.create_schema, self.ports.store.connection)
        jobs: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("timed", self.reporter.run_timed), ("samples", self.reporter.run_samples),
            *((link.name, link.run) for link in self.links)]
        alarms = self.ports.outbox.channels.get(ALARMS_CHANNEL)
        if alarms is not None:
            jobs.append(("alarms", lambda: self.reporter.run_alarms(alarms)))
        if self.waiting or alarms is None:
            log.warning("sl651_channels_from_next_start", centres=self.waiting,
                        alarms=alarms is None,
                        note="not registered at the reload: restart the gateway")
        self._tasks = [asyncio.create_task(self._keep_running(name, job), name=f"sl651-{name}")
                       for name, job in jobs]
        log.info("sl651_started", centres=len(self.links),
                 station=self.config.station_address)
        await asyncio.gather(*self._tasks)

    @staticmethod
    async def _keep_running(name: str, job: Callable[[], Awaitable[None]]) -> None:
        while True:
            try:
                await job()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("sl651_task_failed", task=name)
                await asyncio.sleep(RESTART_S)

    async def stop(self) -> None:
        await stop_tasks(*self._tasks)
        self._tasks = []

    async def send_test(self) -> dict[str, Any]:
        """The ``sl651_test`` command: a test report (30H) to every centre."""
        seq = await self.reporter.test_report()
        return {"queued": seq is not None, "seq": seq,
                "centres": [link.name for link in self.links]}

    def health(self) -> dict[str, Any]:
        channels: dict[str, Any] = {link.name: {"kind": "sl651", **link.health()}
                                    for link in self.links}
        # The alarm intake has no peer: it is in the gateway, always reachable.
        channels[ALARMS_CHANNEL] = {"kind": "sl651 alarm intake", "connected": True}
        return {"kind": "sl651", "reports": dict(self.reporter.counts), "channels": channels,
                "waiting_for_restart": list(self.waiting)}
