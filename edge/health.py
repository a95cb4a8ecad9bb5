"""The gateway's health: one snapshot assembled from each component's own figures.

Published retained on ``{root}/health``, written to the local status file that
``edge status`` reads while the uplink is down, and summed up in systemd's status line.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from typing import Any, Protocol

import structlog

from edge import __version__
from edge.buses import BusSupervisor
from edge.hostinfo import (
    CpuMeter,
    clock_before_release,
    clock_synchronized,
    disk_free_bytes,
    rss_bytes,
    store_size_bytes,
)
from edge.outbox import Outbox
from edge.pipeline import Pipeline
from edge.sdnotify import SystemdNotifier
from edge.statusfile import write_status_file
from edge.store import StoreWorker
from vocab.model import now_ms

log = structlog.get_logger("edge.health")

# How often, between two snapshots, the status line is compared with the devices' and the
# uplink's state. Those states live in the bus tasks and the MQTT channel, which know nothing
# of systemd; reading them is a few attribute lookups, so a technician's `systemctl status`
# follows a device going offline within this, not a whole health interval later.
STATE_CHECK_S = 1.0

class Channel(Protocol):
    """What health asks of an output channel or service."""

    name: str

    def health(self) -> dict[str, Any]: ...


class HealthReporter:
    def __init__(self, store: StoreWorker, outbox: Outbox, pipeline: Pipeline,
                 buses: BusSupervisor, channels: Callable[[], list[Channel]],
                 state: Callable[[], dict[str, Any]], quota_bytes: int) -> None:
        self.store = store
        self.outbox = outbox
        self.pipeline = pipeline
        self.buses = buses
        self.channels = channels
        self.state = state  # config digest and reload count, from the gateway
        self.quota_bytes = quota_bytes
        self._started = time.monotonic()
        self._cpu = CpuMeter()

    async def snapshot(self) -> dict[str, Any]:
        stats = await self.outbox.stats()
        now = now_ms()
        channels = {c.name: c.health() for c in self.channels()}
        mqtt = channels.get("mqtt")
        load1, load5, _ = os.getloadavg()
        db = self.store.path
        return {
            "ts": now,
            "version": __version__,
            **self.state(),
            "uptime_s": round(time.monotonic() - self._started, 1),
            "outbox": {
                "depth": stats.depth, "alarms": stats.alarms,
                "oldest_age_s": round((now - stats.oldest_created_ms) / 1000, 1)
                if stats.oldest_created_ms else None,
                "inflight": mqtt["inflight"] if mqtt else 0,
                "last_seq": self.store.last_seq,
            },
            "uplink": {**{k: v for k, v in mqtt.items() if k != "inflight"},
                       "set_aside_total": await self.outbox.set_aside_total()}
            if mqtt else None,
            "channels": channels,
            "buses": self.buses.health(),
            "devices": self.buses.device_states(),
            "active_alarms": len(self.pipeline.active_alarms()),
            "deferred_transitions": self.pipeline.deferred_transitions,
            "store": {"size_bytes": store_size_bytes(db), "disk_free_bytes":
                      disk_free_bytes(db.parent), "integrity": self.store.integrity,
                      "quota_bytes": self.quota_bytes, **vars(self.store.counters)},
            "process": {"cpu_percent": self._cpu.sample(), "rss_bytes": rss_bytes(),
                        "load1": load1, "load5": load5},
            "clock": {"synchronized": clock_synchronized(),
                      "before_release": clock_before_release(now)},
        }

    @staticmethod
    def status_line(snapshot: dict[str, Any]) -> str:
        devices = snapshot["devices"]
        online = sum(1 for d in devices if d["online"])
        uplink = "up" if snapshot["uplink"] and snapshot["uplink"]["connected"] else "down"
        return (f"devices online {online}/{len(devices)}, outbox {snapshot['outbox']['depth']}, "
                f"alarms {snapshot['active_alarms']}, uplink {uplink}")

    async def run(self, systemd: SystemdNotifier, publish: Callable[[str], object],
                  interval_s: float) -> None:
        """Every ``interval_s``: systemd's status line, the status file, and ``publish``
        (retained on ``{root}/health`` while the uplink is up). In between, the status line
        is refreshed whenever a device or the uplink changes state."""
        last: dict[str, Any] | None = None
        while True:
            try:
                last = await self.snapshot()
                systemd.status(self.status_line(last))
                self.write_status_file(last)
                publish(json.dumps(last, separators=(",", ":")))
            except Exception:
                log.exception("health_failed")
            deadline = time.monotonic() + interval_s
            if last is None:
                await asyncio.sleep(interval_s)
            else:
                await self._follow_state_changes(systemd, last, deadline)

    def _live_state(self) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """The devices and uplink parts of a snapshot, as they are now."""
        mqtt = next((c.health() for c in self.channels() if c.name == "mqtt"), None)
        return self.buses.device_states(), mqtt

    async def _follow_state_changes(self, systemd: SystemdNotifier, last: dict[str, Any],
                                    deadline: float) -> None:
        """Until ``deadline``, send a new status line when a device goes online or offline or
        the uplink connects or drops; the other figures stay those of ``last``."""
        shown = self.status_line(last)
        failing = False
        while (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(STATE_CHECK_S, left))
            try:
                devices, uplink = self._live_state()
                line = self.status_line({**last, "devices": devices, "uplink": uplink})
            except Exception:
                if not failing:  # once, not every second; the next snapshot retries
                    log.exception("status_line_failed")
                failing = True
                continue
            if line != shown:
                systemd.status(line)
                shown = line

    def write_status_file(self, snapshot: dict[str, Any]) -> None:
        """The local status `edge status` reads: works while the uplink is down."""
        write_status_file(self.store.path, snapshot)

