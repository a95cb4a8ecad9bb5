"""The keeper's page on the running daemon: ``KeeperPort`` built from the gateway's Ports.

Issue #17: the page (edge/web/app.py) asks this port for snapshots and three actions.
Everything it answers comes from the parts the daemon already has (docs/architecture.md):

* latest readings from the pipeline's one cache (``Pipeline.latest``, the same the rules
  and the MQTT ``inspect`` read); a point the cache does not hold yet (the first polls
  after a restart) from the newest stored messages, so a restart never makes a point
  look "never read";
* active alarms from the alarm book (``Pipeline.active_alarms``), acknowledged through
  ``Pipeline.acknowledge`` with ``via="page"``: the path of the MQTT ``ack_alarm``;
* the one-click inspection through the daemon's ``Inspection``;
* buses and devices from the bus supervisor; uplinks from the outbox and each
  channel's own health.

Store reads (history for plots, the 30-day alarm log, notifications, stored latest
readings) run on a read-only SQLite connection of the page's own, on a thread of its own:
never on the event loop, never on the writer's thread, so a 30-day plot cannot delay a
poll's commit. Only the uplinks' backlogs are counted by the outbox on the store's thread,
as the health topic counts them (it alone knows what was acknowledged but not deleted).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, TypeVar

import structlog

from edge.commands import NoArgs
from edge.history import (
    StoredNotification,
    latest_per_point,
    read_alarm_events,
    read_notifications,
    read_point_history,
)
from edge.pipeline import AckNotStored
from edge.ports import Ports
from edge.web.catalogue import Catalogue, PointEntry
from edge.web.port import (
    AckOutcome,
    AlarmEvent,
    AlarmStatus,
    BusHealth,
    ChannelHealth,
    DeviceHealth,
    Inspection,
    Notification,
    PointStatus,
    SiteInfo,
)
from vocab.model import SEVERITY_RANK, Reading, now_ms

__all__ = ["DaemonKeeper"]

log = structlog.get_logger("edge.web")

T = TypeVar("T")
NotificationStatus = Literal["sent", "delivered", "failed", "pending"]

NOTIFICATION_STATUSES: dict[str, NotificationStatus] = {
    "sent": "sent", "delivered": "delivered", "failed": "failed", "pending": "pending"}


class StoreReader:
    """A read-only connection to the store, used on one thread of its own."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="web-reader")
        self._conn: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
            conn.execute("PRAGMA busy_timeout=5000")
            conn.execute("PRAGMA cache_size=-256")  # a plot reads history once
            self._conn = conn
        return self._conn

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor,
                                          lambda: work(self._connection()))

    async def close(self) -> None:
        """Close the connection on its own thread, after any read under way (awaited, so
        the loop is never blocked by it), then let the thread go."""
        def close_connection() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        loop = asyncio.get_running_loop()
        with contextlib.suppress(RuntimeError):  # closed before
            await loop.run_in_executor(self._executor, close_connection)
        self._executor.shutdown(wait=False, cancel_futures=True)


def _acknowledged_at(conn: sqlite3.Connection, alarm_ids: Sequence[str]) -> dict[str, int]:
    marks = ",".join("?" * len(alarm_ids))
    return {alarm_id: acked_ms for alarm_id, acked_ms in conn.execute(
        f"SELECT alarm_id, acked_ms FROM alarms WHERE alarm_id IN ({marks})",
        tuple(alarm_ids)) if acked_ms is not None}


class DaemonKeeper:
    """``KeeperPort`` (edge/web/port.py) on the running gateway."""

    def __init__(self, ports: Ports) -> None:
        self.ports = ports
        self.reader = StoreReader(str(ports.store.path))
        self._catalogue: Catalogue | None = None
        # Stored latest readings of devices the pipeline had not polled yet at start.
        self._stored_latest: dict[str, Reading] = {}
        self._looked_up: set[str] = set()
        self._lookup = asyncio.Lock()
        self._notification_problem_logged = False

    async def close(self) -> None:
        await self.reader.close()

    def catalogue(self) -> Catalogue:
        """The configured points, rebuilt when a reload brought another configuration."""
        settings = self.ports.settings()
        if self._catalogue is None or self._catalogue.settings is not settings:
            self._catalogue = Catalogue(settings)
        return self._catalogue

    # --- the site and its points ---------------------------------------------------------

    async def site(self) -> SiteInfo:
        return self.catalogue().site

    async def _latest(self, entries: Sequence[PointEntry]) -> dict[str, Reading]:
        latest = self.ports.pipeline.latest
        missing = {p.ref.split("/", 1)[0] for p in entries if p.ref not in latest}
        if missing - self._looked_up:
            async with self._lookup:  # pages at once look a device up once, all see it
                unread = sorted(missing - self._looked_up)
                if unread:
                    found = await self.reader.run(lambda conn: latest_per_point(conn, unread))
                    self._stored_latest.update((r.key, r) for r in found)
                    self._looked_up.update(unread)
        return {p.ref: reading for p in entries
                if (reading := latest.get(p.ref) or self._stored_latest.get(p.ref))}

    @staticmethod
    def _status(entry: PointEntry, reading: Reading | None, now: int) -> PointStatus:
        if reading is None:
            return PointStatus(entry.ref, entry.name, entry.unit, entry.quantity,
                               entry.section, None, None, None, None, False, entry.interval_s,
                               entry.limits)
        return PointStatus(entry.ref, entry.name, entry.unit or reading.unit, entry.quantity,
                           entry.section, reading.value, reading.ts_ms, reading.quality,
                           reading.reason, now - reading.ts_ms > entry.stale_after_ms,
                           entry.interval_s, entry.limits)

    async def points(self) -> Sequence[PointStatus]:
        entries = self.catalogue().points
        latest = await self._latest(entries)
        now = now_ms()
        return [self._status(p, latest.get(p.ref), now) for p in entries]

    # --- alarms --------------------------------------------------------------------------

    async def active_alarms(self) -> Sequence[AlarmStatus]:
        active = self.ports.pipeline.active_alarms()
        acked = [a.alarm_id for a in active if a.acked]
        # The time of an acknowledgement is only in the store (the book keeps who and how).
        at = await self.reader.run(lambda conn: _acknowledged_at(conn, acked)) if acked else {}
        found = [AlarmStatus(
            a.alarm_id, a.key, a.rule, a.severity, a.state, a.raised_ms, a.updated_ms, a.value,
            a.limit, a.message, a.acked, a.acked_by if a.acked else None,
            at.get(a.alarm_id) if a.acked else None, a.acked_via if a.acked else None)
            for a in active]
        return sorted(found, key=lambda a: (-SEVERITY_RANK.get(a.severity, 0), a.since_ms))

    async def alarm_history(self, from_ms: int, to_ms: int,
                            limit: int) -> Sequence[AlarmEvent]:
        events = await self.reader.run(
            lambda conn: read_alarm_events(conn, from_ms, to_ms, limit))
        return [AlarmEvent(t.alarm_id, f"{t.device}/{t.point}", t.rule, t.severity, t.state,
                           t.ts_ms, t.value, t.limit, t.message,
                           _text(t.extra.get("by")) if t.state == "acknowledged" else None,
                           _text(t.extra.get("via")) if t.state == "acknowledged" else None)
                for t in events]

    async def acknowledge(self, alarm_id: str, by: str) -> AckOutcome:
        try:
            transition = await self.ports.pipeline.acknowledge(alarm_id, by, "page")
        except AckNotStored:
            return AckOutcome("failed", "the acknowledgement could not be stored; try again")
        if transition is None:
            return AckOutcome("not_active", f"no unacknowledged active alarm {alarm_id!r}")
        return AckOutcome("acknowledged")

    async def notifications(self, from_ms: int, to_ms: int,
                            limit: int) -> Sequence[Notification]:
        """The notification service's log, once it keeps one (edge/history.py)."""
        try:
            stored = await self.reader.run(
                lambda conn: read_notifications(conn, from_ms, to_ms, limit))
        except sqlite3.Error as exc:
            # The alarms page must still show the alarms: the log is left out.
            if not self._notification_problem_logged:
                log.error("web_notifications_unreadable", error=str(exc))
                self._notification_problem_logged = True
            return []
        return [_notification(n) for n in stored]

    # --- buses, channels, history, inspection --------------------------------------------

    async def buses(self) -> Sequence[BusHealth]:
        """Every configured bus and its devices; a device its task has not polled yet (or a
        bus without a task: no devices, or not started) shows as never polled."""
        settings = self.ports.settings()
        pollers = self.ports.buses.pollers
        found = []
        for bus in settings.buses:
            poller = pollers.get(bus.id)
            known = poller.health.devices if poller is not None else {}
            devices = []
            for device in (d for d in settings.devices if d.bus == bus.id):
                h = known.get(device.id)
                devices.append(
                    DeviceHealth(device.id, "", False, None, 0, 0, 0, None) if h is None else
                    DeviceHealth(device.id, "", h.online, h.last_good_ms, h.polls, h.errors,
                                 h.consecutive_failures, h.last_error))
            found.append(BusHealth(bus.id, bus.type, bool(poller and poller.health.connected),
                                   tuple(devices)))
        return found

    async def channels(self) -> Sequence[ChannelHealth]:
        health = self.ports.channel_health()
        found = []
        for name, channel in self.ports.outbox.channels.items():
            # Counted by the outbox on the store's thread, as the health topic counts it:
            # only it knows which rows are acknowledged but not yet deleted.
            stats = await channel.stats()
            own = _channel_health(health, name)
            found.append(ChannelHealth(
                name, str(own.get("kind", name)), bool(own.get("connected", False)),
                stats.depth, stats.oldest_created_ms, channel.counts.last_ack_ms,
                "" if "connected" in own else "no connection state reported"))
        return found

    async def history(self, point: str, from_ms: int, to_ms: int,
                      limit: int) -> Sequence[Reading]:
        device, point_id = point.split("/", 1)
        return await self.reader.run(
            lambda conn: read_point_history(conn, device, point_id, from_ms, to_ms, limit))

    async def inspect(self) -> Inspection:
        requested = now_ms()
        report = await self.ports.inspection(NoArgs())
        points = await self.points()
        fresh = frozenset(p.point for p in points
                          if p.ts_ms is not None and p.ts_ms >= requested)
        complete = all(p["fresh"] for p in report["points"])
        return Inspection(requested, now_ms(), tuple(points), fresh, complete)


def _notification(n: StoredNotification) -> Notification:
    """A status the page does not know is shown as a failure, with the status said."""
    status = NOTIFICATION_STATUSES.get(n.status)
    if status is None:
        return Notification(n.ts_ms, n.channel, n.recipient, n.alarm_id, "failed",
                            f"{n.status} {n.detail}".strip())
    return Notification(n.ts_ms, n.channel, n.recipient, n.alarm_id, status, n.detail)


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _channel_health(health: Mapping[str, Mapping[str, Any]], name: str) -> dict[str, Any]:
    """A channel's own health: the MQTT channel's, or a service's of that name, or the
    entry a service with several channels keeps for it under ``channels``."""
    if name in health:
        own = dict(health[name])
        if name == "mqtt":
            own.setdefault("kind", "mqtt")
        return own
    for service in health.values():
        channels = service.get("channels")
        if isinstance(channels, Mapping) and isinstance(channels.get(name), Mapping):
            return dict(channels[name])
    return {}
