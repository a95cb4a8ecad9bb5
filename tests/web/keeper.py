"""A KeeperPort on a real store, and the page served from a loop of its own.

``StoreKeeper`` writes readings and alarm transitions with the daemon's ``Store`` (the
writer) into a real SQLite file and reads them back, as the daemon will, on a read-only
connection of its own thread (the reader): ``read_point_history`` for plots, the
``alarms``/``alarm_events`` tables for the alarm pages, the outbox for the backlog. The
lead's end-to-end test runs the page on the real gateway instead.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import sqlite3
import threading
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from edge.history import latest_per_point, read_point_history
from edge.store import Store
from edge.web.app import KeeperWeb
from edge.web.config import WebConfig
from edge.web.port import (
    AckOutcome,
    AlarmEvent,
    AlarmStatus,
    BusHealth,
    ChannelHealth,
    Inspection,
    LimitLine,
    Notification,
    PointStatus,
    Section,
    SiteInfo,
)
from vocab.model import SEVERITY_RANK, AlarmTransition, Reading, now_ms

T = TypeVar("T")


@dataclass(frozen=True)
class PointSpec:
    ref: str
    name: str
    unit: str
    quantity: str
    section: Section
    interval_s: float | None
    limits: tuple[LimitLine, ...] = ()


@dataclass
class StoreKeeper:
    """KeeperPort backed by a real SQLite store; records what the page asked it to do."""

    path: Path
    site_info: SiteInfo
    specs: Sequence[PointSpec]
    bus_health: Sequence[BusHealth] = ()
    sent: Sequence[Notification] = ()
    acks: list[tuple[str, str]] = field(default_factory=list)
    inspections: int = 0
    history_calls: int = 0

    def __post_init__(self) -> None:
        self.store = Store(self.path, synchronous="normal")
        self._writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="store")
        self._reader_pool = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="reader")
        self._reader: sqlite3.Connection | None = None
        self._acked_by: dict[str, tuple[str, int]] = {}

    # --- writing (test set-up; the writer thread when the page acts) -------------------

    def write(self, cycles: Sequence[tuple[Sequence[Reading], Sequence[AlarmTransition]]]
              ) -> None:
        self.store.commit_cycles(cycles)

    def close(self) -> None:
        self._writer.shutdown(wait=True)
        self._reader_pool.shutdown(wait=True)
        if self._reader is not None:
            self._reader.close()
        self.store.close()

    async def _write(self, readings: Sequence[Reading],
                     transitions: Sequence[AlarmTransition]) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._writer, self.store.commit_cycle, readings,
                                   transitions)

    async def _read(self, fn: Any, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reader_pool, fn, *args)

    def _conn(self) -> sqlite3.Connection:
        if self._reader is None:
            self._reader = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True,
                                           check_same_thread=False)
            self._reader.row_factory = sqlite3.Row
        return self._reader

    # --- KeeperPort --------------------------------------------------------------------

    async def site(self) -> SiteInfo:
        return self.site_info

    def _latest(self) -> dict[str, Reading]:
        devices = sorted({s.ref.split("/", 1)[0] for s in self.specs})
        return {r.key: r for r in latest_per_point(self._conn(), devices)}

    def _status(self, spec: PointSpec, reading: Reading | None, now: int) -> PointStatus:
        if reading is None:
            return PointStatus(spec.ref, spec.name, spec.unit, spec.quantity, spec.section,
                               None, None, None, None, False, spec.interval_s, spec.limits)
        stale = bool(spec.interval_s and now - reading.ts_ms > 3 * spec.interval_s * 1000)
        return PointStatus(spec.ref, spec.name, spec.unit, spec.quantity, spec.section,
                           reading.value, reading.ts_ms, reading.quality, reading.reason,
                           stale, spec.interval_s, spec.limits)

    async def points(self) -> Sequence[PointStatus]:
        latest = await self._read(self._latest)
        now = now_ms()
        return [self._status(s, latest.get(s.ref), now) for s in self.specs]

    def _active(self) -> list[AlarmStatus]:
        rows = self._conn().execute(
            "SELECT * FROM alarms WHERE state != 'cleared'").fetchall()
        found = []
        for r in rows:
            by, at = self._acked_by.get(r["alarm_id"], ("", None))
            found.append(AlarmStatus(
                r["alarm_id"], f"{r['device']}/{r['point']}", r["rule"], r["severity"],
                r["state"], r["raised_ms"], r["updated_ms"], r["value"], r["limit_value"],
                r["message"], bool(r["acked"]), by if r["acked"] else None,
                at if r["acked"] else None, "page" if r["acked"] else None))
        return sorted(found, key=lambda a: (-SEVERITY_RANK[a.severity], a.since_ms))

    async def active_alarms(self) -> Sequence[AlarmStatus]:
        return await self._read(self._active)

    def _history(self, from_ms: int, to_ms: int, limit: int) -> list[AlarmEvent]:
        rows = self._conn().execute(
            "SELECT e.*, a.rule, a.device, a.point FROM alarm_events e JOIN alarms a "
            "ON a.alarm_id = e.alarm_id WHERE e.ts_ms BETWEEN ? AND ? "
            "ORDER BY e.ts_ms DESC, e.seq DESC LIMIT ?", (from_ms, to_ms, limit)).fetchall()
        return [AlarmEvent(r["alarm_id"], f"{r['device']}/{r['point']}", r["rule"],
                           r["severity"], r["state"], r["ts_ms"], r["value"],
                           r["limit_value"], r["message"],
                           self._acked_by.get(r["alarm_id"], (None, 0))[0]
                           if r["state"] == "acknowledged" else None,
                           "page" if r["state"] == "acknowledged" else None)
                for r in rows]

    async def alarm_history(self, from_ms: int, to_ms: int,
                            limit: int) -> Sequence[AlarmEvent]:
        return await self._read(self._history, from_ms, to_ms, limit)

    async def notifications(self, from_ms: int, to_ms: int,
                            limit: int) -> Sequence[Notification]:
        chosen = [n for n in self.sent if from_ms <= n.ts_ms <= to_ms]
        return sorted(chosen, key=lambda n: -n.ts_ms)[:limit]

    async def buses(self) -> Sequence[BusHealth]:
        return self.bus_health

    def _backlog(self) -> tuple[int, int | None]:
        row = self._conn().execute("SELECT COUNT(*), MIN(created_ms) FROM outbox").fetchone()
        return int(row[0]), row[1]

    async def channels(self) -> Sequence[ChannelHealth]:
        backlog, oldest = await self._read(self._backlog)
        return [ChannelHealth("platform", "mqtt", False, backlog, oldest,
                              now_ms() - 3_600_000, "connection refused"),
                ChannelHealth("county-centre", "sl651", True, 0, None, now_ms() - 60_000)]

    async def history(self, point: str, from_ms: int, to_ms: int,
                      limit: int) -> Sequence[Reading]:
        self.history_calls += 1
        device, point_id = point.split("/", 1)
        return await self._read(read_point_history, self._conn(), device, point_id,
                                from_ms, to_ms, limit)

    async def inspect(self) -> Inspection:
        """Every point read again now (the test's stand-in for polling the devices)."""
        self.inspections += 1
        requested = now_ms()
        await asyncio.sleep(0.2)  # the buses take a moment
        latest = await self._read(self._latest)
        fresh_readings = []
        for spec in self.specs:
            previous = latest.get(spec.ref)
            if previous is None or previous.value is None or spec.section == "rainfall":
                continue
            device, point = spec.ref.split("/", 1)
            fresh_readings.append(Reading(device, point, now_ms(), previous.value, spec.unit,
                                          "good"))
        await self._write(fresh_readings, [])
        points = await self.points()
        fresh = frozenset(r.key for r in fresh_readings)
        return Inspection(requested, now_ms(), tuple(points), fresh,
                          complete=len(fresh) == len(points))

    async def acknowledge(self, alarm_id: str, by: str) -> AckOutcome:
        self.acks.append((alarm_id, by))
        active = {a.alarm_id: a for a in await self.active_alarms()}
        alarm = active.get(alarm_id)
        if alarm is None or alarm.acknowledged:
            return AckOutcome("not_active", f"no unacknowledged active alarm {alarm_id!r}")
        device, point = alarm.point.split("/", 1)
        ts = now_ms()
        await self._write([], [AlarmTransition(alarm_id, alarm.rule, device, point,
                                               alarm.severity, "acknowledged", alarm.value,
                                               alarm.limit, ts, f"acknowledged by {by}")])
        self._acked_by[alarm_id] = (by, ts)
        return AckOutcome("acknowledged")

    def mark_acknowledged(self, alarm_id: str, by: str, ts_ms: int) -> None:
        self._acked_by[alarm_id] = (by, ts_ms)


class LoopThread:
    """An event loop on a thread of its own: the daemon's loop, for a synchronous test."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="test-loop",
                                        daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def serve(loop: LoopThread, keeper: StoreKeeper, config: WebConfig,
          **options: Any) -> KeeperWeb:
    async def _start() -> KeeperWeb:
        server = KeeperWeb(keeper, config, **options)
        await server.start()
        return server

    return loop.run(_start())


def shifted(reading: Reading, **changes: Any) -> Reading:
    return replace(reading, **changes)


def wave(index: int) -> float:
    return round(123.0 + 0.3 * math.sin(index / 20), 3)
