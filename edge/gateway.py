"""The daemon: one event loop owning every stage of drivers → store → rules → uplink.

Bus tasks hand each device's poll result to a bounded queue; a single pipeline task runs
the rules over it and commits readings, telemetry and alarm transitions to the store in
one transaction; the uplink drains the outbox. Acquisition never waits for the uplink.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import ssl
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog

from drivers.bustask import BusTask
from drivers.registry import make_poller
from edge import __version__
from edge.commands import (
    MAX_RESEND,
    STATE_CHANGING,
    AckAlarmArgs,
    CommandFailed,
    CommandRouter,
    GetReadingsArgs,
    ResendArgs,
)
from edge.config import ConfigError, GatewaySettings, LoadedConfig, load_config
from edge.hostinfo import (
    CpuMeter,
    clock_before_release,
    clock_synchronized,
    disk_free_bytes,
    rss_bytes,
    store_size_bytes,
)
from edge.sdnotify import SystemdNotifier, WatchdogGate, watchdog_interval_s
from edge.store import HistoryReader, Store, StoreWorker
from edge.uplink import MqttUplink, ResponseRoute
from rules.alarms import ActiveAlarm
from rules.engine import Evaluation, RuleEngine
from vocab.configbase import StrictModel
from vocab.model import CLOCK_INVALID, AlarmTransition, PollResult, Reading, now_ms

log = structlog.get_logger("edge.gateway")

SHUTDOWN_DRAIN_S = 5.0
INSPECT_TIMEOUT_S = 30.0
STATUS_FILE = "status.json"
# Polls waiting for the store when a commit ends go into the next one together; bounded
# so one transaction (and the alarms in it) is never held up long.
COMMIT_BATCH = 32
# A bus task that has not come round its loop for this long is hung: the watchdog pings
# stop and systemd restarts the service. Idle buses beat every few seconds (drivers).
BUS_STALL_S = 120.0
BUS_STOP_TIMEOUT_S = 10.0


def is_disk_full(exc: sqlite3.OperationalError) -> bool:
    """SQLITE_FULL: the disk (ENOSPC) or the file's page limit is full."""
    return "full" in str(exc).lower()


class Gateway:
    def __init__(self, loaded: LoadedConfig, config_path: str | Path | None = None) -> None:
        self.loaded = loaded
        self.config_path = Path(config_path) if config_path else None
        self._queue: asyncio.Queue[PollResult | None] = asyncio.Queue(maxsize=256)
        self._stop = asyncio.Event()
        self.store: StoreWorker | None = None
        self.uplink: MqttUplink | None = None
        self._uplink_task: asyncio.Task[None] | None = None
        self.engine: RuleEngine | None = None
        self.pollers: dict[str, BusTask] = {}
        self._bus_tasks: dict[str, asyncio.Task[None]] = {}
        self.latest: dict[str, Reading] = {}
        self.last_poll: dict[str, int] = {}  # device -> epoch ms of its last poll result
        self._poll_event = asyncio.Event()
        self._started = time.monotonic()
        self._cpu = CpuMeter()
        self._reload_lock = asyncio.Lock()
        # Held while a poll is evaluated and committed, and while the engine is rebuilt:
        # a rebuild must see every transition the old engine produced.
        self._rules_lock = asyncio.Lock()
        self._uncommitted: list[AlarmTransition] = []
        self._history: HistoryReader | None = None
        self.deferred_transitions = 0
        self.reloads = 0
        self.systemd = SystemdNotifier()
        self.watchdog_gate = WatchdogGate()

    @property
    def settings(self) -> GatewaySettings:
        return self.loaded.settings

    def request_stop(self) -> None:
        self._stop.set()

    # --- acquisition -> store -------------------------------------------------------------

    async def _enqueue(self, result: PollResult) -> None:
        await self._queue.put(result)

    async def _pipeline(self) -> None:
        assert self.store is not None
        while True:
            result = await self._queue.get()
            if result is None:
                return
            batch = [result]
            # Polls that finished while the last commit ran are committed together: one
            # WAL append and fsync for all of them, each still its own message.
            while len(batch) < COMMIT_BATCH and not self._queue.empty():
                waiting = self._queue.get_nowait()
                if waiting is None:
                    self._queue.put_nowait(None)  # stop after this batch
                    break
                batch.append(waiting)
            assert self.engine is not None and self.uplink is not None
            async with self._rules_lock:
                cycles: list[tuple[PollResult, Evaluation, list[AlarmTransition]]] = []
                for polled in batch:
                    evaluation = self.engine.evaluate(self._stamped(polled.readings))
                    self.deferred_transitions = evaluation.deferred
                    # Transitions of a poll whose commit failed were already applied to
                    # the alarm book: they are carried to the next commit, not lost.
                    cycles.append((polled, evaluation,
                                   [*self._uncommitted, *evaluation.transitions]))
                    self._uncommitted = []
                stored, anything = await self._commit_polls(
                    [(polled.device, ev.readings, transitions)
                     for polled, ev, transitions in cycles])
            for (polled, evaluation, _), readings_stored in zip(cycles, stored, strict=True):
                if not readings_stored:
                    continue
                for reading in evaluation.readings:
                    self.latest[reading.key] = reading
                self.last_poll[polled.device] = now_ms()
            if any(stored):
                self._poll_event.set()
            if anything:
                self.uplink.notify()

    async def _commit_polls(
        self, polls: Sequence[tuple[str, Sequence[Reading], list[AlarmTransition]]],
    ) -> tuple[list[bool], bool]:
        """Commit (device, readings, transitions) of several polls in one transaction.

        If that fails, one poll may be what failed: the others are committed on their own,
        and a failing poll's alarms without its readings; alarms that cannot be stored at
        all are carried to the next commit. Returns, per poll, whether its readings were
        stored, and whether anything was.
        """
        if await self._commit([(readings, transitions) for _, readings, transitions in polls],
                              polls[0][0]):
            return [True] * len(polls), True
        stored: list[bool] = []
        anything = False
        for device, readings, transitions in polls:
            if await self._commit([(readings, transitions)], device):
                stored.append(True)
                anything = True
                continue
            stored.append(False)
            if transitions and await self._commit([((), transitions)], device):
                anything = True
            else:
                self._uncommitted += transitions
        return stored, anything

    @staticmethod
    def _stamped(readings: tuple[Reading, ...]) -> tuple[Reading, ...]:
        if not clock_before_release(now_ms()):
            return readings
        # A clock before this release's date is wrong (no RTC after a power cut): keep
        # the readings, but say their timestamps cannot be trusted.
        return tuple(
            Reading(r.device, r.point, r.ts_ms, r.value, r.unit,
                    "bad" if r.quality == "bad" else "suspect", r.raw,
                    r.reason or CLOCK_INVALID) for r in readings)

    async def _commit(
        self, cycles: Sequence[tuple[Sequence[Reading], Sequence[AlarmTransition]]],
        device: str,
    ) -> bool:
        assert self.store is not None
        store = self.store.store
        readings = sum(len(r) for r, _ in cycles)
        for attempt in (1, 2):
            try:
                await self.store.call(store.commit_cycles, cycles)
                return True
            except sqlite3.OperationalError as exc:
                if attempt == 1 and is_disk_full(exc):
                    # The disk or the file is full: the transaction was rolled back, so
                    # nothing stored is damaged. Make room as the quota would, and retry.
                    used = await self.store.call(store.used_bytes)
                    log.error("store_disk_full", device=device, used_bytes=used)
                    await self._maintain_store(int(used * 0.8))
                    continue
                log.exception("store_commit_failed", device=device, readings=readings)
                return False
            except Exception:
                log.exception("store_commit_failed", device=device, readings=readings)
                return False
        return False

    async def _maintain_store(self, quota_bytes: int | None = None) -> None:
        assert self.store is not None
        cfg = self.settings.store
        quota = quota_bytes if quota_bytes is not None else int(cfg.quota_mb * 1024 * 1024)
        retention_before = now_ms() - cfg.retention_days * 86_400_000
        try:
            await self.store.call(self.store.store.maintain, quota, retention_before)
        except Exception:
            log.exception("store_maintenance_failed")

    async def _maintenance_loop(self) -> None:
        while True:
            await self._maintain_store()
            await asyncio.sleep(self.settings.store.maintenance_interval_s)

    def _start_bus(self, bus_id: str) -> None:
        bus = self.settings.bus(bus_id)
        devices = [d for d in self.settings.devices if d.bus == bus.id]
        if not devices:
            return
        poller = make_poller(bus, devices, self._enqueue)
        self.pollers[bus.id] = poller
        self.watchdog_gate.register(f"bus:{bus.id}")
        self._bus_tasks[bus.id] = asyncio.create_task(poller.run(), name=f"bus:{bus.id}")

    async def _stop_bus(self, bus_id: str) -> None:
        poller = self.pollers.pop(bus_id, None)
        task = self._bus_tasks.pop(bus_id, None)
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
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    # --- uplink ---------------------------------------------------------------------------

    def _make_uplink(self) -> MqttUplink:
        assert self.store is not None
        router = self._router()
        subscriptions = (router.subscription,) if self.settings.commands.enabled else ()
        uplink = MqttUplink(self.settings, self.store, subscriptions, self._on_message)
        self._commands = router
        return uplink

    async def _on_message(self, topic: str, payload: bytes, response: ResponseRoute) -> None:
        try:
            reply = await self._commands.handle(topic, payload)
        except Exception:  # a command must never take the daemon down
            log.exception("command_failed", topic=topic)
            return
        if reply is not None and self.uplink is not None:
            # The reply always goes to {root}/cmd/<name>/reply (every broker); an MQTT 5
            # requester that named a response topic gets it there too, with its tag.
            self.uplink.publish_now(reply.topic, reply.payload)
            if response.topic and response.topic != reply.topic:
                self.uplink.publish_now(response.topic, reply.payload,
                                        correlation=response.correlation)
            log.info("command_answered", topic=topic, ok='"ok":true' in reply.payload)

    def _router(self) -> CommandRouter:
        handlers = {
            "inspect": self._cmd_inspect,
            "ack_alarm": self._cmd_ack_alarm,
            "get_status": self._cmd_get_status,
            "reload_config": self._cmd_reload_config,
            "get_readings": self._cmd_get_readings,
            "resend": self._cmd_resend,
        }
        disabled = frozenset(self.settings.commands.disabled)
        return CommandRouter(self.settings.topic_root, handlers, disabled)  # type: ignore[arg-type]

    # --- commands -------------------------------------------------------------------------

    async def _cmd_get_status(self, _: StrictModel) -> dict[str, Any]:
        return await self.health_snapshot()

    async def _cmd_get_readings(self, args: StrictModel) -> dict[str, Any]:
        assert isinstance(args, GetReadingsArgs) and self.store is not None
        if args.to_ms < args.from_ms:
            raise CommandFailed("args.to: must not be before args.from")
        device, point = args.point.split("/", 1)
        known = {f"{d.id}/{p.id}" for d, p in self.settings.iter_points()}
        if args.point not in known and args.point not in self.latest:
            raise CommandFailed(f"args.point: unknown point {args.point!r}")
        rows = await self.store.call(self.store.store.readings, device, point, args.from_ms,
                                     args.to_ms, args.limit + 1)
        return {
            "point": args.point,
            "readings": [{"ts": r.ts_ms, "value": r.value, "raw": r.raw,
                          "quality": r.quality, "reason": r.reason}
                         for r in rows[: args.limit]],
            "truncated": len(rows) > args.limit,
        }

    async def _cmd_resend(self, args: StrictModel) -> dict[str, Any]:
        assert isinstance(args, ResendArgs)
        assert self.store is not None and self.uplink is not None
        if args.to_seq < args.from_seq:
            raise CommandFailed("args.to_seq: must not be below args.from_seq")
        if args.to_seq - args.from_seq + 1 > MAX_RESEND:
            raise CommandFailed(f"at most {MAX_RESEND} seqs per request")
        report = await self.store.call(self.store.store.requeue, args.from_seq, args.to_seq)
        await self.uplink.resend(args.from_seq, args.to_seq)
        return {"requeued": report.requeued, "already_queued": report.already_queued,
                "missing": report.missing[:1000]}

    async def _cmd_ack_alarm(self, args: StrictModel) -> dict[str, Any]:
        assert isinstance(args, AckAlarmArgs)
        assert self.engine is not None and self.store is not None and self.uplink is not None
        async with self._rules_lock:
            transition = self.engine.acknowledge(args.alarm_id, now_ms())
            if transition is None:
                active = [a.alarm_id for a in self.engine.book.active.values()]
                raise CommandFailed(f"no unacknowledged active alarm {args.alarm_id!r} "
                                    f"(active: {', '.join(active) or 'none'}; an alarm the "
                                    "storm limiter still holds cannot be acknowledged yet)")
            if not await self._commit([((), [transition])], "ack_alarm"):
                for alarm in self.engine.book.active.values():
                    if alarm.alarm_id == args.alarm_id:
                        alarm.acked = False  # not stored: it may be acknowledged again
                raise CommandFailed("the acknowledgement could not be stored; try again")
        self.uplink.notify()
        return {"alarm_id": args.alarm_id, "acknowledged": True}

    async def _cmd_reload_config(self, _: StrictModel) -> dict[str, Any]:
        problems = await self.reload()
        if problems:
            raise CommandFailed("configuration refused, the running one stays: "
                                + " | ".join(problems))
        return {"config": self.loaded.digest, "reloads": self.reloads}

    async def _cmd_inspect(self, _: StrictModel) -> dict[str, Any]:
        """Poll every device now and report every point and device (one-click inspection)."""
        requested = now_ms()
        for poller in self.pollers.values():
            poller.poll_now()
        devices = {d.id for d in self.settings.devices}
        deadline = time.monotonic() + INSPECT_TIMEOUT_S
        while time.monotonic() < deadline:
            if all(self.last_poll.get(d, 0) >= requested for d in devices):
                break
            self._poll_event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poll_event.wait(), 0.5)
        return self.inspection_report(requested)

    def inspection_report(self, requested_ms: int) -> dict[str, Any]:
        now = now_ms()
        active = self.engine.book.active.values() if self.engine else []
        alarms_by_point: dict[str, list[dict[str, Any]]] = {}
        for alarm in active:
            alarms_by_point.setdefault(f"{alarm.device}/{alarm.point}", []).append(
                {"id": alarm.alarm_id, "rule": alarm.rule, "severity": alarm.severity,
                 "acked": alarm.acked})
        points = []
        for device, point in self.settings.iter_points():
            key = f"{device.id}/{point.id}"
            reading = self.latest.get(key)
            points.append({
                "point": key, "unit": point.unit,
                "value": reading.value if reading else None,
                "quality": reading.quality if reading else "bad",
                "reason": (reading.reason if reading else "never_read"),
                "age_s": round((now - reading.ts_ms) / 1000, 1) if reading else None,
                "fresh": bool(reading and reading.ts_ms >= requested_ms),
                "alarms": alarms_by_point.get(key, []),
            })
        return {"ts": now, "devices": self._device_states(), "points": points}

    def _device_states(self) -> list[dict[str, Any]]:
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

    # --- health ---------------------------------------------------------------------------

    async def health_snapshot(self) -> dict[str, Any]:
        assert self.store is not None
        stats = await self.store.call(self.store.store.outbox_stats)
        now = now_ms()
        uplink = self.uplink.health if self.uplink else None
        load1, load5, _ = os.getloadavg()
        db = self.settings.store.path
        return {
            "ts": now,
            "version": __version__,
            "config": self.loaded.digest,
            "uptime_s": round(time.monotonic() - self._started, 1),
            "outbox": {
                "depth": stats.depth, "alarms": stats.alarms,
                "oldest_age_s": round((now - stats.oldest_created_ms) / 1000, 1)
                if stats.oldest_created_ms else None,
                "inflight": self.uplink.inflight if self.uplink else 0,
                "last_seq": self.store.store.last_seq,
            },
            "uplink": {"connected": uplink.connected, "connects": uplink.connects,
                       "disconnects": uplink.disconnects, "published": uplink.published,
                       "acked": uplink.acked, "set_aside": uplink.set_aside,
                       "refused": uplink.refused,
                       "set_aside_total": await self.store.call(
                           self.store.store.set_aside_count)} if uplink else None,
            "buses": {bus_id: {"connected": p.health.connected, "cycles": p.health.cycles,
                               "reconnects": p.health.reconnects,
                               "bytes_sent": p.health.bytes_sent,
                               "bytes_received": p.health.bytes_received,
                               **({"counters": dict(p.health.counters)}
                                  if p.health.counters else {})}
                      for bus_id, p in self.pollers.items()},
            "devices": self._device_states(),
            "active_alarms": len(self.engine.book.active) if self.engine else 0,
            "deferred_transitions": self.deferred_transitions,
            "store": {"size_bytes": store_size_bytes(db), "disk_free_bytes":
                      disk_free_bytes(db.parent), "integrity": self.store.store.integrity,
                      "quota_bytes": int(self.settings.store.quota_mb * 1024 * 1024),
                      **vars(self.store.store.counters)},
            "process": {"cpu_percent": self._cpu.sample(), "rss_bytes": rss_bytes(),
                        "load1": load1, "load5": load5},
            "clock": {"synchronized": clock_synchronized(),
                      "before_release": clock_before_release(now)},
            "reloads": self.reloads,
        }

    async def _watchdog_loop(self, interval_s: float) -> None:
        """WATCHDOG=1 only while the loop runs (this task) and every bus task is alive."""
        reported_stale = False
        while True:
            now = time.monotonic()
            for bus_id, poller in self.pollers.items():
                self.watchdog_gate.beat(f"bus:{bus_id}", poller.health.last_cycle_monotonic)
            if self.watchdog_gate.all_alive(now, BUS_STALL_S):
                self.systemd.watchdog()
                reported_stale = False
            elif not reported_stale:
                log.error("watchdog_withheld", stale=self.watchdog_gate.stale(now, BUS_STALL_S))
                reported_stale = True
            await asyncio.sleep(interval_s)

    def _status_line(self, snapshot: dict[str, Any]) -> str:
        devices = snapshot["devices"]
        online = sum(1 for d in devices if d["online"])
        uplink = "up" if snapshot["uplink"] and snapshot["uplink"]["connected"] else "down"
        return (f"devices online {online}/{len(devices)}, outbox {snapshot['outbox']['depth']}, "
                f"alarms {snapshot['active_alarms']}, uplink {uplink}")

    async def _health_loop(self) -> None:
        while True:
            try:
                snapshot = await self.health_snapshot()
                self.systemd.status(self._status_line(snapshot))
                self._write_status_file(snapshot)
                if self.uplink is not None:
                    self.uplink.publish_now(f"{self.settings.topic_root}/health",
                                            json.dumps(snapshot, separators=(",", ":")),
                                            retain=True)
            except Exception:
                log.exception("health_failed")
            await asyncio.sleep(self.settings.health.interval_s)

    def _write_status_file(self, snapshot: dict[str, Any]) -> None:
        """The local status `edge status` reads: works while the uplink is down."""
        path = self.settings.store.path.parent / STATUS_FILE
        tmp = path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps({**snapshot, "pid": os.getpid()}), encoding="utf-8")
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("status_file_failed", path=str(path), error=str(exc))

    # --- reload ---------------------------------------------------------------------------

    async def reload(self) -> list[str]:
        """Apply a changed config; an invalid one is refused and the running one stays."""
        if self.config_path is None:
            return ["this gateway was not started from a config path"]
        async with self._reload_lock:
            self.systemd.reloading()
            try:
                return await self._reload()
            finally:
                self.systemd.ready()

    async def _reload(self) -> list[str]:
        assert self.config_path is not None
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            problems = [str(p) for p in exc.problems]
            log.error("reload_refused", errors=problems)
            return problems
        old = self.settings
        if new.settings.store != old.store:
            problem = "store: the store cannot change on reload; restart the service"
            log.error("reload_refused", errors=[problem])
            return [problem]
        if new.settings.mqtt != old.mqtt:
            try:
                # Reads the password and the TLS files now, while refusing is still free.
                MqttUplink(new.settings, self.store)  # type: ignore[arg-type]
            except (ValueError, OSError, ssl.SSLError) as exc:
                problem = f"mqtt: the new settings cannot connect: {exc}"
                log.error("reload_refused", errors=[problem])
                return [problem]
        self.loaded = new
        settings = new.settings
        # Buses whose own settings or whose devices changed are restarted; the others
        # keep polling without a gap.
        def bus_view(cfg: GatewaySettings, bus_id: str) -> Any:
            buses = [b for b in cfg.buses if b.id == bus_id]
            return (buses, [d for d in cfg.devices if d.bus == bus_id])

        bus_ids = {b.id for b in old.buses} | {b.id for b in settings.buses}
        changed = sorted(b for b in bus_ids if bus_view(old, b) != bus_view(settings, b))
        for bus_id in changed:
            await self._stop_bus(bus_id)
            if any(b.id == bus_id for b in settings.buses):
                self._start_bus(bus_id)
        if (settings.rules, settings.derived, settings.site) != (
                old.rules, old.derived, old.site) or changed:
            await self._rebuild_engine()
        known = {f"{d.id}/{p.id}" for d, p in settings.iter_points()}
        for key in [k for k in self.latest if k.split("/")[0] in
                    {d.id for d in old.devices} and k not in known]:
            del self.latest[key]
        if (settings.mqtt, settings.topic_root, settings.commands) != (
                old.mqtt, old.topic_root, old.commands):
            await self._restart_uplink()
        self.reloads += 1
        log.info("config_reloaded", config=new.digest, buses_restarted=changed)
        return []

    async def _store_held_transitions(self) -> None:
        """Transitions the storm limiter still holds are stored before the engine goes."""
        if self.engine is None:
            return
        held = [*self._uncommitted, *self.engine.drain()]
        self._uncommitted = []
        if held:
            if await self._commit([((), held)], "rules"):
                log.info("alarm_transitions_released", count=len(held))
            else:
                self._uncommitted = held

    async def _rebuild_engine(self) -> None:
        async with self._rules_lock:
            await self._rebuild_engine_locked()

    async def _rebuild_engine_locked(self) -> None:
        assert self.store is not None
        await self._store_held_transitions()
        # The rules' state that matters across a rebuild (active alarms) lives in the
        # store, so a new engine resumes exactly where the old one was; windows and fits
        # warm up again from the stored history.
        active = await self.store.call(self.store.store.active_alarms)
        if self._history is None:
            self._history = HistoryReader(self.settings.store.path)
        self.engine = RuleEngine(self.settings.rule_site(), [
            ActiveAlarm(a.alarm_id, a.rule, a.device, a.point, a.severity,  # type: ignore[arg-type]
                        a.side, a.limit, a.acked) for a in active], history=self._history)

    async def _restart_uplink(self) -> None:
        # Build (and read the password of) the new client first: a reload whose MQTT
        # settings cannot work must not leave the gateway without an uplink.
        fresh = self._make_uplink()
        if self.uplink is not None:
            await self.uplink.drain(SHUTDOWN_DRAIN_S)
            await self.uplink.stop()
        if self._uplink_task is not None:
            self._uplink_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._uplink_task
        self.uplink = fresh
        self._uplink_task = asyncio.create_task(self.uplink.run(), name="uplink")

    # --- life cycle -----------------------------------------------------------------------

    async def run(self) -> int:
        settings = self.settings
        store = Store(settings.store.path, settings.store.synchronous)
        self.store = StoreWorker(store)
        await self._rebuild_engine()
        self.uplink = self._make_uplink()
        for bus in settings.buses:
            self._start_bus(bus.id)

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self.reload()))
        log.info("gateway_started", site=settings.site.id, gateway=settings.gateway.id,
                 config=self.loaded.digest, buses=len(self.pollers),
                 devices=len(settings.devices), rules=len(settings.rules),
                 outbox_seq=store.last_seq, state_changing_commands=sorted(
                     STATE_CHANGING - set(settings.commands.disabled)))

        self._uplink_task = asyncio.create_task(self.uplink.run(), name="uplink")
        pipeline_task = asyncio.create_task(self._pipeline(), name="pipeline")
        health_task = asyncio.create_task(self._health_loop(), name="health")
        maintenance_task = asyncio.create_task(self._maintenance_loop(), name="maintenance")
        interval = watchdog_interval_s()
        watchdog_task = (asyncio.create_task(self._watchdog_loop(interval), name="watchdog")
                         if interval is not None else None)
        # Config loaded and store open: systemd may consider the service started.
        self.systemd.ready(f"polling {len(settings.devices)} devices on "
                           f"{len(self.pollers)} buses")
        integrity_check = asyncio.create_task(asyncio.to_thread(store.check_integrity),
                                              name="integrity-check")

        await self._stop.wait()
        log.info("gateway_stopping")
        store.interrupt_integrity_check()
        with contextlib.suppress(Exception):
            await integrity_check
        self.systemd.stopping()
        if watchdog_task is not None:
            # From STOPPING=1 on, systemd times the stop with TimeoutStopSec instead.
            watchdog_task.cancel()
        async with self._reload_lock:
            for bus_id in list(self.pollers):
                await self._stop_bus(bus_id)
            await self._queue.put(None)
            # Each step of the stop runs even if an earlier one failed: the offline status
            # and a closed store matter more than the error.
            try:
                await pipeline_task
            except Exception:
                log.exception("pipeline_failed_at_stop")
            await self._store_held_transitions()
            health_task.cancel()
            maintenance_task.cancel()
            assert self.uplink is not None
            await self.uplink.drain(SHUTDOWN_DRAIN_S)
            await self.uplink.stop()
            if self._uplink_task is not None:
                self._uplink_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._uplink_task
            with contextlib.suppress(Exception):
                self._write_status_file({**(await self.health_snapshot()), "stopped": True})
            self.store.close()
            if self._history is not None:
                self._history.close()
        log.info("gateway_stopped", outbox_seq=store.last_seq)
        return 0
