"""The gateway's health: one snapshot assembled from each component's own figures.

Published retained on ``{root}/health``, written to the local status file that
``edge status`` reads while the uplink is down, and summed up in systemd's status line.
"""

from __future__ import annotations

import asyncio
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
        return _status_line(sum(1 for d in devices if d["online"]), len(devices),
                            snapshot["outbox"]["depth"], snapshot["active_alarms"],
                            snapshot["uplink"])

    async def run(self, systemd: SystemdNotifier,
                  publish: Callable[[dict[str, Any]], object],
                  interval_s: float) -> None:
        """Every ``interval_s``: systemd's status line, the status file, and ``publish``
        (retained on ``{root}/health`` while the uplink is up, within the broker's packet
        limit: edge/healthfit.py). In between, the status line
        is refreshed whenever a device or the uplink changes state."""
        # Between snapshots only what the status line needs is kept: the whole snapshot
        # holds a dict per device (about 0.8 KiB each at 200 small devices).
        summary: dict[str, Any] | None = None
        shown = ""
        while True:
            try:
                snapshot = await self.snapshot()
                systemd.status(self.status_line(snapshot))
                self.write_status_file(snapshot)
                publish(snapshot)
                summary = {key: snapshot[key] for key in ("outbox", "active_alarms")}
                shown = self.status_line(snapshot)
                del snapshot
            except Exception:
                log.exception("health_failed")
            deadline = time.monotonic() + interval_s
            if summary is None:
                await asyncio.sleep(interval_s)
            else:
                await self._follow_state_changes(systemd, summary, shown, deadline)

    def _live_line(self, summary: dict[str, Any]) -> str:
        """The status line with the devices and the uplink as they are now (counted, not
        assembled into a snapshot: this runs every second)."""
        online, total = self.buses.devices_online()
        mqtt = next((c.health() for c in self.channels() if c.name == "mqtt"), None)
        return _status_line(online, total, summary["outbox"]["depth"], summary["active_alarms"],
                            mqtt)

    async def _follow_state_changes(self, systemd: SystemdNotifier, summary: dict[str, Any],
                                    shown: str, deadline: float) -> None:
        """Until ``deadline``, send a new status line when a device goes online or offline or
        the uplink connects or drops; the other figures stay those of the last snapshot."""
        failing = False
        while (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(STATE_CHECK_S, left))
            try:
                line = self._live_line(summary)
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


def _status_line(online: int, total: int, outbox_depth: int, active_alarms: int,
                 uplink: dict[str, Any] | None) -> str:
    state = "up" if uplink and uplink["connected"] else "down"
    return (f"devices online {online}/{total}, outbox {outbox_depth}, "
            f"alarms {active_alarms}, uplink {state}")
