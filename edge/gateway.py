"""The daemon's composition root: builds the parts, starts them, reloads them, stops them.

One event loop owns everything. Data flows one way (docs/architecture.md):

    bus tasks (drivers/) → pipeline: rules (rules/) → one store commit → outbox → channels

* ``BusSupervisor`` (edge/buses.py): one task per bus, restarted on reload only where
  its settings changed, watched by the systemd watchdog;
* ``Pipeline`` (edge/pipeline.py): queue → rules → one commit per batch of polls;
* ``Outbox`` (edge/outbox.py): each channel's stream of what to send, acknowledgements,
  quota; ``MqttChannel`` (edge/channels/mqtt.py) speaks MQTT;
* commands (edge/commands.py, edge/command_handlers.py) and health (edge/health.py).

Blocking work never runs on the loop: the store has its own thread, configuration is
parsed in a process of its own on reload (edge/daemon_config.py), the integrity check on
a connection and thread of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import ssl
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import structlog

from edge import command_handlers as handlers
from edge.buses import BusSupervisor
from edge.channels.mqtt import KINDS as MQTT_KINDS
from edge.channels.mqtt import MqttChannel, ResponseRoute
from edge.commands import (
    REPLY_ENVELOPE_BYTES,
    STATE_CHANGING,
    CommandFigures,
    CommandRouter,
    Handler,
)
from edge.commitwindow import commit_window_ms, round_wait_ms
from edge.config import ConfigError, GatewaySettings, LoadedConfig
from edge.daemon_config import load_for_reload
from edge.early_stop import stop_requested
from edge.health import HealthReporter
from edge.healthfit import fit_snapshot, fitted_json
from edge.heap import give_back_free_memory
from edge.history import HistoryReader
from edge.outbox import Outbox
from edge.pipeline import Pipeline
from edge.ports import Ports, Service, ServiceType
from edge.sdnotify import SystemdNotifier, watchdog_interval_s
from edge.services import SERVICE_TYPES, configured
from edge.statusfile import write_status_file
from edge.store import Store, StoreWorker
from rules.engine import RuleEngine
from vocab.model import ActiveAlarm
from vocab.waits import stop_tasks

log = structlog.get_logger("edge.gateway")

SHUTDOWN_DRAIN_S = 5.0


class Gateway:
    def __init__(self, loaded: LoadedConfig, config_path: str | Path | None = None) -> None:
        self.loaded = loaded
        self.config_path = Path(config_path) if config_path else None
        self._stop = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self.reloads = 0
        self.systemd = SystemdNotifier()
        settings = loaded.settings
        self.store = StoreWorker(Store(
            settings.store.path, settings.store.synchronous,
            history_fold_s=settings.store.history_fold_s,
            resend_horizon_s=settings.store.resend_horizon_s,
            max_message_bytes=settings.mqtt.max_message_bytes))
        self.outbox = Outbox(self.store)
        self.pipeline = Pipeline(self.store, self.outbox, self._make_room,
                                 commit_window_ms(settings), round_wait_ms(settings))
        self.buses = BusSupervisor(settings, self.pipeline.enqueue)
        self.history = HistoryReader(settings.store.path)
        # Model fits over years of history run here, never on the loop (rules/hst.py).
        self.rules_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rules-fit")
        self.mqtt: MqttChannel | None = None
        self._mqtt_task: asyncio.Task[None] | None = None
        self.services: dict[str, tuple[Service, asyncio.Task[None]]] = {}
        self.command_figures = CommandFigures()  # outlives the routers of reloads
        self.health = HealthReporter(self.store, self.outbox, self.pipeline, self.buses,
                                     self._channels, self._health_state,
                                     int(settings.store.quota_mb * 1024 * 1024))
        self.inspection = handlers.Inspection(lambda: self.settings.iter_points(), self.buses,
                                              self.pipeline)
        self.ports = Ports(self.store, self.outbox, self.pipeline, self.buses, self.inspection,
                           lambda: self.settings,
                           lambda: {c.name: c.health() for c in self._channels()})

    @property
    def settings(self) -> GatewaySettings:
        return self.loaded.settings

    @property
    def pollers(self) -> dict[str, Any]:
        return self.buses.pollers

    def request_stop(self) -> None:
        self._stop.set()

    def _state(self) -> dict[str, Any]:
        return {"config": self.loaded.digest, "reloads": self.reloads}

    def _health_state(self) -> dict[str, Any]:
        return {**self._state(), "commands": vars(self.command_figures).copy()}

    def _channels(self) -> list[Any]:
        mqtt = [self.mqtt] if self.mqtt is not None else []
        return mqtt + [service for service, _ in self.services.values()]

    # --- the optional services (edge/services.py) ------------------------------------------

    def _start_service(self, service_type: ServiceType) -> None:
        service = service_type.build(self.settings, self.ports)
        task = asyncio.create_task(service.run(), name=service_type.name)
        self.services[service_type.name] = (service, task)
        log.info("service_started", service=service_type.name)

    async def _stop_service(self, name: str) -> None:
        entry = self.services.pop(name, None)
        if entry is None:
            return
        service, task = entry
        try:
            await service.stop()
        except Exception:
            log.exception("service_stop_failed", service=name)
        await stop_tasks(task)

    async def _apply_services(self, old: GatewaySettings) -> None:
        """Restart the services whose section changed; start new ones, stop removed ones.
        Their outbox channels follow in between: a centre added by the reload is sent what
        is committed from then on, one removed releases what only it still needed."""
        changed = [service_type for service_type in SERVICE_TYPES
                   if service_type.section(old) != service_type.section(self.settings)]
        if not changed:
            return
        for service_type in changed:
            await self._stop_service(service_type.name)
        try:
            await self.outbox.open(_channel_kinds(self.settings))
        except Exception:  # the store failed: the services run with the channels they had
            log.exception("outbox_channels_not_registered")
        for service_type in changed:
            if service_type.section(self.settings) is not None:
                self._start_service(service_type)

    async def _make_room(self, quota_bytes: int) -> None:
        await self.outbox.maintain(quota_bytes, self.settings.store.retention_days)

    def _message_limit(self, topic: str) -> int:
        """The most payload a message outside the outbox may carry on ``topic``."""
        return self.mqtt.message_limit(topic) if self.mqtt else self.settings.mqtt.max_message_bytes

    def _publish_health(self, snapshot: dict[str, Any]) -> None:
        if self.mqtt is not None:
            topic = f"{self.settings.topic_root}/health"
            self.mqtt.publish_now(topic, fitted_json(snapshot, self._message_limit(topic)),
                                  retain=True)

    async def _status_reply(self) -> dict[str, Any]:
        """``get_status``: the health snapshot, its reply within the limit (healthfit.py)."""
        limit = self._message_limit(f"{self.settings.topic_root}/cmd/get_status/reply")
        return fit_snapshot(await self.health.snapshot(), limit - REPLY_ENVELOPE_BYTES)

    def _build_engine(self, active: list[ActiveAlarm]) -> RuleEngine:
        return RuleEngine(self.settings.rule_site(), active, history=self.history,
                          worker=self.rules_worker)

    # --- the MQTT channel and its commands ---------------------------------------------------

    def _router(self) -> CommandRouter:
        settings = self.settings
        command_handlers: dict[str, Handler] = {
            "inspect": self.inspection,
            "ack_alarm": handlers.acknowledge_alarm(self.pipeline),
            "get_status": handlers.get_status(self._status_reply),
            "reload_config": handlers.reload_config(self.reload, self._state),
            "get_readings": handlers.get_readings(self.store, settings.iter_points,
                                                  self.pipeline),
            "resend": handlers.resend(self.outbox.channel(MqttChannel.name)),
            "notify_test": handlers.notify_test(self._notify_service),
            "sl651_test": handlers.sl651_test(lambda: self._service("sl651")),
        }
        return CommandRouter(settings.topic_root, command_handlers,
                             frozenset(settings.commands.disabled),
                             settings.commands.reply_prefix, self.command_figures,
                             self._message_limit)

    def _notify_service(self) -> Any:
        return self._service("notify")

    def _service(self, name: str) -> Any:
        entry = self.services.get(name)
        return entry[0] if entry is not None else None

    def _make_mqtt(self, settings: GatewaySettings) -> MqttChannel:
        """Build (and read the password and TLS files of) an MQTT channel."""
        router = self._router()
        subscriptions = (router.subscription,) if settings.commands.enabled else ()

        async def on_message(topic: str, payload: bytes, response: ResponseRoute) -> None:
            await self._answer(router, topic, payload, response)

        return MqttChannel(settings.mqtt, settings.topic_root,
                           f"reservoir-edge-{settings.site.id}-{settings.gateway.id}",
                           self.outbox.channel(MqttChannel.name), subscriptions, on_message)

    async def _answer(self, router: CommandRouter, topic: str, payload: bytes,
                      response: ResponseRoute) -> None:
        try:
            reply = await router.handle(topic, payload, response.topic)
            if reply is None or self.mqtt is None:
                return
            # The reply always goes to {root}/cmd/<name>/reply (every broker); an MQTT 5
            # requester whose response topic the router accepted gets it there too.
            self.mqtt.publish_now(reply.topic, reply.payload)
            if reply.response_topic and reply.response_topic != reply.topic:
                self.mqtt.publish_now(reply.response_topic, reply.payload,
                                      correlation=response.correlation)
        except Exception:  # a command must never take the daemon down
            log.exception("command_failed", topic=topic)
            return
        log.info("command_answered", topic=topic, ok='"ok":true' in reply.payload)

    async def _restart_mqtt(self) -> None:
        # Build (and read the password of) the new client first: a reload whose MQTT
        # settings cannot work must not leave the gateway without an uplink.
        fresh = self._make_mqtt(self.settings)
        await self._stop_mqtt()
        self.mqtt = fresh
        self._mqtt_task = asyncio.create_task(fresh.run(), name="mqtt")

    async def _stop_mqtt(self) -> None:
        if self.mqtt is not None:
            await self.mqtt.drain(SHUTDOWN_DRAIN_S)
            await self.mqtt.stop()
        if self._mqtt_task is not None:
            await stop_tasks(self._mqtt_task)

    # --- reload ------------------------------------------------------------------------------

    async def reload(self) -> list[str]:
        """Apply a changed config; an invalid one is refused and the running one stays."""
        if self.config_path is None:
            return ["this gateway was not started from a config path"]
        async with self._reload_lock:
            self.systemd.reloading()
            try:
                return await self._reload(self.config_path)
            finally:
                self.systemd.ready()

    async def _reload(self, path: Path) -> list[str]:
        try:
            # Parsing a configuration is blocking work of unbounded size: a worker's, so
            # the loop and the watchdog never wait for it.
            new = await asyncio.to_thread(load_for_reload, path, self.loaded)
        except ConfigError as exc:
            return self._refused([str(p) for p in exc.problems])
        old = self.settings
        if new.settings.store != old.store:
            return self._refused(["store: the store cannot change on reload; restart the "
                                  "service"])
        if new.settings.mqtt != old.mqtt:
            try:
                # Reads the password and the TLS files now, while refusing is still free.
                MqttChannel(new.settings.mqtt, new.settings.topic_root, "check",
                            self.outbox.channel(MqttChannel.name))
            except (ValueError, OSError, ssl.SSLError) as exc:
                return self._refused([f"mqtt: the new settings cannot connect: {exc}"])
        self.loaded = new
        settings = new.settings
        changed = await self.buses.apply(settings)
        # Both follow the fastest poll interval, which the new devices may change.
        self.pipeline.commit_window_s = commit_window_ms(settings) / 1000
        self.pipeline.round_wait_s = round_wait_ms(settings) / 1000
        self.store.max_message_bytes = settings.mqtt.max_message_bytes
        if (settings.rules, settings.derived, settings.site) != (
                old.rules, old.derived, old.site) or changed:
            await self.pipeline.rebuild_engine(self._build_engine)
        known = {f"{d.id}/{p.id}" for d, p in settings.iter_points()}
        old_devices = {d.id for d in old.devices}
        self.pipeline.forget_points(lambda k: k.split("/")[0] not in old_devices or k in known)
        if (settings.mqtt, settings.topic_root, settings.commands) != (
                old.mqtt, old.topic_root, old.commands):
            await self._restart_mqtt()
        await self._apply_services(old)
        self.reloads += 1
        # What the previous settings held is free now; the unpickled new ones took
        # memory beside them (edge/heap.py). A walk of the heap: not on the loop.
        await asyncio.to_thread(give_back_free_memory)
        log.info("config_reloaded", config=new.digest, buses_restarted=changed)
        return []

    @staticmethod
    def _refused(problems: list[str]) -> list[str]:
        log.error("reload_refused", errors=problems)
        return problems

    # --- life cycle --------------------------------------------------------------------------

    async def run(self) -> int:
        settings = self.settings
        await self.outbox.open(_channel_kinds(settings))
        await self.pipeline.rebuild_engine(self._build_engine)
        self.mqtt = self._make_mqtt(settings)
        self.buses.start_all()
        for service_type in configured(settings):
            self._start_service(service_type)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self.reload()))
        if stop_requested():  # a SIGTERM of start-up whose exception was lost: stop in order
            self.request_stop()
        log.info("gateway_started", site=settings.site.id, gateway=settings.gateway.id,
                 config=self.loaded.digest, buses=len(self.buses.pollers),
                 devices=len(settings.devices), rules=len(settings.rules),
                 outbox_seq=self.store.last_seq,
                 commit_window_ms=round(self.pipeline.commit_window_s * 1000, 1),
                 state_changing_commands=sorted(
                     STATE_CHANGING - set(settings.commands.disabled)))
        self._mqtt_task = asyncio.create_task(self.mqtt.run(), name="mqtt")
        tasks = [
            asyncio.create_task(self.outbox.run_ack_writer(), name="outbox-acks"),
            asyncio.create_task(self.health.run(self.systemd, self._publish_health,
                                                settings.health.interval_s), name="health"),
            asyncio.create_task(self.outbox.run_maintenance(
                int(settings.store.quota_mb * 1024 * 1024), settings.store.retention_days,
                settings.store.maintenance_interval_s), name="maintenance"),
        ]
        interval = watchdog_interval_s()
        watchdog = (asyncio.create_task(self.buses.run_watchdog(self.systemd, interval),
                                        name="watchdog") if interval is not None else None)
        pipeline = asyncio.create_task(self.pipeline.run(), name="pipeline")
        # Config loaded and store open: systemd may consider the service started.
        self.systemd.ready(f"polling {len(settings.devices)} devices on "
                           f"{len(self.buses.pollers)} buses")
        integrity = asyncio.create_task(self.store.check_integrity(), name="integrity-check")
        await self._stop.wait()
        await self._shut_down(pipeline, tasks, watchdog, integrity)
        return 0

    async def _shut_down(self, pipeline: asyncio.Task[None], tasks: list[asyncio.Task[None]],
                         watchdog: asyncio.Task[None] | None,
                         integrity: asyncio.Task[str]) -> None:
        log.info("gateway_stopping")
        self.store.interrupt_integrity_check()
        with contextlib.suppress(Exception):
            await integrity
        self.systemd.stopping()
        if watchdog is not None:
            # From STOPPING=1 on, systemd times the stop with TimeoutStopSec instead.
            watchdog.cancel()
        async with self._reload_lock:
            # Services first, while the buses still run: a siren is switched off over its
            # bus. What the last polls commit reaches them from the outbox at the next start.
            for name in list(self.services):
                await self._stop_service(name)
            await self.buses.stop_all()
            await self.pipeline.stop()
            # Each step of the stop runs even if an earlier one failed: the offline status
            # and a closed store matter more than the error.
            try:
                await pipeline
            except Exception:
                log.exception("pipeline_failed_at_stop")
            await self.pipeline.store_held_transitions()
            await self._stop_mqtt()
            await stop_tasks(*tasks)
            await self.outbox.flush_acks()
            with contextlib.suppress(Exception):
                write_status_file(self.store.path,
                                  {**(await self.health.snapshot()), "stopped": True})
            self.rules_worker.shutdown(wait=True, cancel_futures=True)
            self.store.close()
            self.history.close()
        log.info("gateway_stopped", outbox_seq=self.store.last_seq)


def _channel_kinds(settings: GatewaySettings) -> dict[str, tuple[str, ...]]:
    """Every outbox channel the site configures, and the kinds of message each takes."""
    channels: dict[str, tuple[str, ...]] = {MqttChannel.name: MQTT_KINDS}
    for service_type in configured(settings):
        channels.update(service_type.channels(settings))
    return channels
