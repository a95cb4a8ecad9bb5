"""The bus supervisor: one task per bus, started, stopped, re-planned on reload, watched.

A bus whose settings or devices did not change keeps polling through a reload without a
gap. A bus task that has not come round its loop for ``BUS_STALL_S`` is hung: the
systemd watchdog pings stop and systemd restarts the service (a hung bus would otherwise
leave a reservoir unmonitored while the service looks healthy).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import structlog

from drivers.bus import CoilWrite, PollSink
from drivers.bustask import BusTask
from drivers.registry import make_poller
from edge.config import GatewaySettings
from edge.sdnotify import SystemdNotifier, WatchdogGate
from vocab.waits import stop_tasks

log = structlog.get_logger("edge.buses")

# Idle buses beat every few seconds (drivers/bustask.py HEARTBEAT_S).
BUS_STALL_S = 120.0
BUS_STOP_TIMEOUT_S = 10.0


def _bus_view(settings: GatewaySettings, bus_id: str) -> tuple[list[Any], list[Any]]:
    """What a bus task is built from: its settings and its devices."""
    return ([b for b in settings.buses if b.id == bus_id],
            [d for d in settings.devices if d.bus == bus_id])


class BusSupervisor:
    def __init__(self, settings: GatewaySettings, sink: PollSink) -> None:
        self.settings = settings
        self.sink = sink
        self.pollers: dict[str, BusTask] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.watchdog_gate = WatchdogGate()
        self._stopped = False

    def start_all(self) -> None:
        self._stopped = False
        for bus in self.settings.buses:
            self.start(bus.id)

    def start(self, bus_id: str, write_only: bool = False) -> None:
        """Start a bus's task; one without devices only when asked to (``write_only``: a
        bus that carries nothing but relay modules)."""
        buses, devices = _bus_view(self.settings, bus_id)
        if not buses or not (devices or write_only):
            return
        poller = make_poller(buses[0], devices, self.sink)
        self.pollers[bus_id] = poller
        self.watchdog_gate.register(f"bus:{bus_id}")
        self._tasks[bus_id] = asyncio.create_task(poller.run(), name=f"bus:{bus_id}")

    async def stop(self, bus_id: str) -> None:
        poller = self.pollers.pop(bus_id, None)
        task = self._tasks.pop(bus_id, None)
        self.watchdog_gate.unregister(f"bus:{bus_id}")
        if poller is not None:
            poller.stop()
        if task is None:
            return
        # A poll in progress finishes (its readings are not lost); a task that does not
        # come back within the bound is hung and is cancelled so shutdown cannot hang.
        done, _ = await asyncio.wait({task}, timeout=BUS_STOP_TIMEOUT_S)
        if not done:
            log.error("bus_task_cancelled", bus=bus_id, waited_s=BUS_STOP_TIMEOUT_S)
            await stop_tasks(task)

    async def stop_all(self) -> None:
        self._stopped = True  # no bus is started for a late relay write
        for bus_id in list(self.pollers):
            await self.stop(bus_id)

    async def apply(self, settings: GatewaySettings) -> list[str]:
        """Take a new configuration: restart exactly the buses whose settings or devices
        changed. Returns their ids."""
        old, self.settings = self.settings, settings
        bus_ids = {b.id for b in old.buses} | {b.id for b in settings.buses}
        changed = sorted(b for b in bus_ids if _bus_view(old, b) != _bus_view(settings, b))
        for bus_id in changed:
            await self.stop(bus_id)
            self.start(bus_id)
        return changed

    def poll_all_now(self) -> None:
        """Every device of every bus is due now (the one-click inspection)."""
        for poller in self.pollers.values():
            poller.poll_now()

    async def write_coils(self, bus_id: str, unit: int, address: int,
                          values: Sequence[bool]) -> CoilWrite:
        """Switch coils of a relay module on a bus, between that bus's device polls
        (drivers/bustask.py); the result says whether the read-back matched."""
        poller = self.pollers.get(bus_id)
        known = any(b.id == bus_id for b in self.settings.buses)
        if poller is None and known and not self._stopped:
            # A bus with relays only has no task until its first write.
            self.start(bus_id, write_only=True)
            poller = self.pollers.get(bus_id)
        if poller is None:
            reason = "the buses are stopped" if self._stopped else \
                f"bus {bus_id!r} is not configured"
            return CoilWrite(bus_id, unit, address, tuple(bool(v) for v in values), False,
                             None, reason, 0.0)
        return await poller.write_coils(unit, address, values)

    def device_states(self) -> list[dict[str, Any]]:
        states = []
        for bus_id, poller in self.pollers.items():
            for device_id, h in poller.health.devices.items():
                states.append({
                    "device": device_id, "bus": bus_id, "online": h.online,
                    "last_good_ms": h.last_good_ms, "polls": h.polls, "errors": h.errors,
                    "consecutive_failures": h.consecutive_failures,
                    "requests_per_cycle": h.requests_last_cycle, "last_error": h.last_error,
                    "error_kinds": dict(h.error_kinds),
                })
        return states

    def devices_online(self) -> tuple[int, int]:
        """Devices online, and devices in all."""
        healths = [h for p in self.pollers.values() for h in p.health.devices.values()]
        return sum(1 for h in healths if h.online), len(healths)

    def health(self) -> dict[str, Any]:
        return {bus_id: {"connected": p.health.connected, "cycles": p.health.cycles,
                         "reconnects": p.health.reconnects,
                         "bytes_sent": p.health.bytes_sent,
                         "bytes_received": p.health.bytes_received,
                         **({"counters": dict(p.health.counters)} if p.health.counters else {})}
                for bus_id, p in self.pollers.items()}

    async def run_watchdog(self, systemd: SystemdNotifier, interval_s: float) -> None:
        """WATCHDOG=1 only while the loop runs (this task) and every bus task is alive."""
        reported_stale = False
        while True:
            now = time.monotonic()
            for bus_id, poller in self.pollers.items():
                self.watchdog_gate.beat(f"bus:{bus_id}", poller.health.last_cycle_monotonic)
            if self.watchdog_gate.all_alive(now, BUS_STALL_S):
                systemd.watchdog()
                reported_stale = False
            elif not reported_stale:
                log.error("watchdog_withheld", stale=self.watchdog_gate.stale(now, BUS_STALL_S))
                reported_stale = True
            await asyncio.sleep(interval_s)
