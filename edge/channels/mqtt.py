"""The MQTT channel: the district platform's uplink, draining the outbox to a broker.

Store-and-forward as the platform needs it on a flaky 4G link:

* a message leaves the outbox only on the PUBACK of its own message id, never when
  ``publish()`` returns (losing the seconds before an outage is noticed is the classic
  failure of other gateways, see lessons.md);
* at most ``max_inflight`` messages are unacknowledged at once, so memory stays bounded
  however long the backlog; the backlog itself lives on disk;
* what goes next (alarms first, live data beside the backlog, which messages are
  replays) is the outbox's to say (edge/outbox.py); this module only speaks MQTT;
* a message unacknowledged past ``inflight_deadline_s`` means the broker has stalled:
  the uplink says so in health, reconnects and sends the same seqs again
  (edge/channels/mqtt_inflight.py);
* every failed connection attempt is counted, and logged with its reason whenever the
  reason changes (edge/channels/mqtt_session.py).

paho runs its network loop in its own thread; its callbacks hop onto the event loop
with ``call_soon_threadsafe`` and all state here is touched only from the loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.channels.mqtt_config import MqttConfig, TlsConfig, check
from edge.channels.mqtt_inflight import InflightClock
from edge.channels.mqtt_paho import (
    PUBLISH_OVERHEAD_BYTES,
    ChannelEvents,
    PahoBridge,
    ResponseRoute,
)
from edge.channels.mqtt_poison import PoisonWatch
from edge.channels.mqtt_session import (
    ConnectFailure,
    UplinkClient,
    make_client,
)
from edge.outbox import ChannelOutbox
from edge.payloads import mark_replay, status_payload
from vocab.model import now_ms
from vocab.waits import stop_tasks

# The configuration model lives in its own module; it is named here too for its users.
__all__ = ["KINDS", "MqttChannel", "MqttConfig", "ResponseRoute", "TlsConfig", "check"]

log = structlog.get_logger("edge.channels.mqtt")

# The kinds of outbox message this channel takes.
KINDS = ("telemetry", "alarm", "event")


UPLINK_RETRY_S = 2.0
REFUSED_RETRY_S = 60.0

# Telemetry older than this when the link comes up is delivered late: it is sent from the
# backlog, oldest first, and marked "replay".
REPLAY_AGE_S = 10


@dataclass
class UplinkHealth:
    connected: bool = False
    connects: int = 0
    disconnects: int = 0
    published: int = 0
    acked: int = 0
    last_connect_ms: int | None = None
    set_aside: int = 0  # poison messages set aside since start
    refused: int = 0  # publishes an MQTT 5 broker answered with a failure reason code
    stalled: bool = False  # a message passed the in-flight deadline; no PUBACK since
    stalls: int = 0  # connections dropped for passing the in-flight deadline
    connect_failures: int = 0  # failed connection attempts since start
    last_connect_failure: ConnectFailure | None = None


MessageCallback = Callable[[str, bytes, ResponseRoute], Awaitable[None]]


class MqttChannel:
    """The outbox channel to the district platform's broker; see the module docstring."""

    name = "mqtt"

    def __init__(self, config: MqttConfig, root: str, client_id: str, outbox: ChannelOutbox,
                 subscriptions: tuple[str, ...] = (),
                 on_message: MessageCallback | None = None) -> None:
        self.config = config
        self.client_id = client_id
        self.outbox = outbox
        self.subscriptions = subscriptions
        self.on_message = on_message
        self.root = root
        self.topics = {"telemetry": f"{root}/telemetry", "alarm": f"{root}/alarms",
                       "event": f"{root}/events"}
        self.window = config.max_inflight
        self.health_figures = UplinkHealth()
        self._wake = asyncio.Event()
        self._inflight: dict[int, int] = {}  # paho mid -> outbox seq
        self._inflight_alarms: set[int] = set()
        # paho itself re-sends its unacknowledged messages after a reconnect, so within
        # one process each seq is handed to paho once; after a restart whatever is left
        # in the outbox is sent again (same seq: at-least-once).
        self._pending_cut = False
        self._poison_watch = PoisonWatch()  # poison messages (edge/channels/mqtt_poison.py)
        self._sizes: dict[int, int] = {}  # in-flight seq -> payload bytes
        self._poison: int | None = None
        self._over_limit: set[str] = set()  # topics refused by publish_now, said once
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._dropping = False  # our own disconnect of a stalled link is under way
        self._clock = InflightClock(config.inflight_deadline)
        self._paho = PahoBridge(config, f"{root}/status", ChannelEvents(
            self._connected, self._disconnected, self._message, self._puback,
            self._connect_failed))
        self.client = self._make_client()

    def _make_client(self) -> UplinkClient:
        client = make_client(self.config, self.config.client_id or self.client_id,
                             f"{self.root}/status", self.window)
        self._paho.attach(client)
        return client

    def _message(self, topic: str, payload: bytes, response: ResponseRoute) -> None:
        if self.on_message is not None and not self._stopping:
            task = asyncio.create_task(self.on_message(topic, payload, response))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    # --- event loop side -----------------------------------------------------------------

    def _connect_failed(self, failure: ConnectFailure) -> None:
        """Counted every time; logged when the reason differs from the last attempt's
        (a broker that stays unreachable for a day gives one line, not thousands)."""
        h = self.health_figures
        h.connect_failures += 1
        if failure != h.last_connect_failure:
            log.warning("mqtt_connect_failed", reason=failure.reason, detail=failure.detail,
                        host=self.config.host, port=self.config.port,
                        failures=h.connect_failures)
        h.last_connect_failure = failure

    def _connected(self) -> None:
        self.health_figures.connected = True
        self.health_figures.connects += 1
        self.health_figures.last_connect_ms = now_ms()
        self.health_figures.last_connect_failure = None
        self._poison_watch.connected()
        self._clock.resent()
        log.info("mqtt_connected", host=self.config.host, port=self.config.port)
        # QoS 0, like every message sent outside the outbox: paho would otherwise keep
        # an unacknowledged one in its window and send it first after every reconnect.
        self.client.publish(f"{self.root}/status", status_payload("online"), qos=0, retain=True)
        for topic in self.subscriptions:
            self.client.subscribe(topic, qos=1)
        self._pending_cut = True
        self._wake.set()

    def _disconnected(self, reason: str) -> None:
        if self.health_figures.connected:
            self.health_figures.disconnects += 1
            log.warning("mqtt_disconnected", reason=reason, inflight=len(self._inflight))
            if not self._dropping:
                self._watch_for_poison(reason)
        self.health_figures.connected = False

    def _watch_for_poison(self, reason: str) -> None:
        if self._stopping:
            self._poison_watch.forget()
            return
        named = self._poison_watch.disconnected(self._inflight, self._inflight_alarms,
                                                self._sizes)
        outside = self._poison_watch.outside_to_report()
        if outside is not None:
            log.error("mqtt_dropped_after_message_outside_outbox", topic=outside[0],
                      bytes=outside[1], reason=reason, hint="the broker's packet limit is "
                      "below this message: set mqtt.max_message_bytes under it")
        if named is not None:
            self._poison = named[0]
            log.error("mqtt_poison_message", seq=named[0], disconnects=named[1],
                      reason=reason, bytes=self._sizes.get(named[0]))
            self._wake.set()

    def _puback(self, mid: int, failed: bool) -> None:
        seq = self._inflight.pop(mid, None)
        if seq is None:
            return  # the status message, or a duplicate ack
        self._inflight_alarms.discard(seq)
        self._sizes.pop(seq, None)
        self._clock.acknowledged(mid)
        if self.health_figures.stalled:
            self.health_figures.stalled = False
            log.info("mqtt_uplink_resumed", seq=seq, stalls=self.health_figures.stalls)
        if failed:
            # An MQTT 5 broker refused it: it stays in the outbox and is offered again
            # after a pause (the refusal may be a passing quota), never deleted unseen.
            self.health_figures.refused += 1
            log.error("mqtt_publish_refused", seq=seq)
            task = asyncio.create_task(self._retry_refused(seq))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            self.outbox.acknowledge((seq,))
            self.health_figures.acked += 1
        self._wake.set()

    def message_limit(self, topic: str) -> int:
        """The most payload a message on ``topic`` may carry: ``max_message_bytes``, or
        less where an MQTT 5 broker said in its CONNACK that it takes smaller packets."""
        bound = self.config.max_message_bytes
        broker = self._paho.broker_packet_limit
        if broker is None:
            return bound
        return min(bound, broker - PUBLISH_OVERHEAD_BYTES - len(topic.encode("utf-8")))

    def publish_now(self, topic: str, payload: str, retain: bool = False,
                    correlation: bytes | None = None) -> bool:
        """Publish outside the outbox (health, command replies): only while connected,
        because such messages are worthless when late.

        QoS 0: paho keeps a QoS 1 message it has no PUBACK for and sends it first after
        every reconnect, untracked by the outbox, so a reply a broker drops the
        connection on would be poison that cannot be set aside, and replies nobody
        acknowledges would fill the in-flight window the outbox needs."""
        if not self.health_figures.connected:
            return False
        size, limit = len(payload.encode("utf-8")), self.message_limit(topic)
        if size > limit:
            # A broker would drop the connection on it, and the telemetry in flight with it.
            if topic not in self._over_limit:
                self._over_limit.add(topic)
                log.error("mqtt_message_over_limit", topic=topic, bytes=size, limit=limit)
            return False
        self._over_limit.discard(topic)
        self._poison_watch.sent_outside(topic, size)
        properties = None
        if correlation is not None and self.config.protocol == "5":
            properties = Properties(PacketTypes.PUBLISH)
            properties.CorrelationData = correlation
        self.client.publish(topic, payload, qos=0, retain=retain, properties=properties)
        return True

    async def resend(self, from_seq: int, to_seq: int) -> None:
        """Send a requeued seq range again (telemetry marked replay)."""
        await self.outbox.rewind(from_seq, to_seq)
        self._wake.set()

    async def run(self) -> None:
        self._paho.loop = asyncio.get_running_loop()
        self._connect()
        self.client.loop_start()
        waiting = asyncio.create_task(self._outbox_wakes(), name="mqtt-outbox-wakes")
        deadline = asyncio.create_task(self._watch_deadline(), name="mqtt-inflight-deadline")
        try:
            while not self._stopping:
                await self._wake.wait()
                self._wake.clear()
                try:
                    await self._step()
                except Exception:
                    # A store error (disk full, I/O) must not end publishing for good:
                    # what was not sent stays in the outbox and is tried again shortly.
                    log.exception("uplink_step_failed")
                    await asyncio.sleep(UPLINK_RETRY_S)
                    self._wake.set()
        finally:
            await stop_tasks(waiting, deadline)

    async def _watch_deadline(self) -> None:
        """Drop and remake the connection when a message passes the in-flight deadline."""
        while True:
            await asyncio.sleep(self._clock.check_every_s())
            waited = self._clock.overdue_s()
            if waited is None or not self.health_figures.connected or self._stopping:
                continue
            try:
                await self._drop_stalled(waited)
            except Exception:
                # The watch must outlive a failed drop: the next look tries again.
                log.exception("mqtt_stall_drop_failed")

    async def _outbox_wakes(self) -> None:
        """New messages in the outbox wake the sender."""
        while True:
            await self.outbox.wait()
            self._wake.set()

    async def _retry_refused(self, seq: int) -> None:
        await asyncio.sleep(REFUSED_RETRY_S)
        await self.outbox.rewind(seq, seq)
        self._wake.set()

    async def _step(self) -> None:
        if self._poison is not None:
            seq, self._poison = self._poison, None
            await self._set_aside(seq)
        if self.health_figures.connected:
            if self._pending_cut:
                self._pending_cut = False
                await self.outbox.connected()
            await self._fill_window()

    async def _set_aside(self, seq: int) -> None:
        """Take a poison message out of the stream; everything else goes on.

        paho re-sends its unacknowledged messages first after every reconnect, the poison
        one included, so the client is replaced: its queue goes with it, and the other
        messages it held are sent again from the outbox (same seq).
        """
        old = self.client
        await asyncio.get_running_loop().run_in_executor(None, old.loop_stop)
        others = sorted(set(self._inflight.values()) - {seq})
        self._inflight.clear()
        self._inflight_alarms.clear()
        self._sizes.clear()
        self._clock.clear()
        try:
            await self.outbox.set_aside(seq, "broker drops the connection on this message")
            self.health_figures.set_aside += 1
        finally:
            # Whatever happened to the bookkeeping, a working client comes back.
            await self.outbox.rewind(others[0] if others else seq,
                                     others[-1] if others else seq)
            self.client = self._make_client()
            self._connect()
            self.client.loop_start()

    async def _drop_stalled(self, waited_s: float) -> None:
        """The broker holds our messages without a PUBACK: say so once, disconnect and
        connect again. paho keeps its unacknowledged messages and sends them again, same
        mid and so same seq, on the new connection (at-least-once, as after any outage)."""
        h = self.health_figures
        h.stalls += 1
        if not h.stalled:
            h.stalled = True
            log.error("mqtt_uplink_stalled", waited_s=round(waited_s, 1),
                      deadline_s=self._clock.deadline_s, inflight=len(self._inflight),
                      oldest_seq=min(self._inflight.values(), default=None))
        self._dropping = True
        try:
            self.client.disconnect()
            await asyncio.get_running_loop().run_in_executor(None, self.client.loop_stop)
            self._connect()
            self.client.loop_start()
        finally:
            self._dropping = False

    def _connect(self) -> None:
        cfg = self.config
        if cfg.protocol == "5":
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = cfg.session_expiry_s
            self.client.connect_async(cfg.host, cfg.port, keepalive=cfg.keepalive_s,
                                      clean_start=False, properties=properties)
        else:
            self.client.connect_async(cfg.host, cfg.port, keepalive=cfg.keepalive_s)

    async def _fill_window(self) -> None:
        while self.health_figures.connected and not self._stopping:
            room = self.window - len(self._inflight)
            if room <= 0:
                return
            messages = await self.outbox.next_batch(room)
            if not messages:
                return
            for message in messages:
                payload = mark_replay(message.payload) if message.replay else message.payload
                info = self.client.publish(self.topics[message.kind], payload, qos=1)
                self._inflight[info.mid] = message.seq
                self._clock.sent(info.mid)
                self._sizes[message.seq] = len(payload)
                if message.kind != "telemetry":
                    self._inflight_alarms.add(message.seq)
                self.health_figures.published += 1

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def health(self) -> dict[str, object]:
        h = self.health_figures
        failure = h.last_connect_failure
        return {"connected": h.connected, "connects": h.connects,
                "disconnects": h.disconnects, "published": h.published, "acked": h.acked,
                "set_aside": h.set_aside, "refused": h.refused, "inflight": self.inflight,
                "stalled": h.stalled, "stalls": h.stalls,
                "connect_failures": h.connect_failures,
                "last_connect_failure": vars(failure) if failure is not None else None}

    async def drain(self, timeout_s: float) -> bool:
        """Before a stop: while connected, send what the outbox holds and wait for the
        acks (bounded by ``timeout_s``); True if nothing is left unacknowledged.

        Whatever is left stays in the outbox and goes out after the next start.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            if not self._inflight:
                stats = await self.outbox.stats()
                if stats.depth == 0 or not self.health_figures.connected:
                    break
            self._wake.set()
            await asyncio.sleep(0.05)
        return not self._inflight

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Publish ``offline``, disconnect cleanly and stop the network thread."""
        self._stopping = True
        self._wake.set()
        if self.health_figures.connected:
            info = self.client.publish(f"{self.root}/status", status_payload("offline"),
                                       qos=1, retain=True)
            deadline = asyncio.get_running_loop().time() + timeout_s
            while not info.is_published() and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.02)
        self.client.disconnect()
        await asyncio.get_running_loop().run_in_executor(None, self.client.loop_stop)
