"""MQTT uplink: drains the outbox to the broker and deletes only what the broker acked.

Store-and-forward as the platform needs it on a flaky 4G link:

* a message leaves the outbox only on the PUBACK of its own message id, never when
  ``publish()`` returns (losing the seconds before an outage is noticed is the classic
  failure of other gateways, see lessons.md);
* at most ``max_inflight`` messages are unacknowledged at once, so memory stays bounded
  however long the backlog; the backlog itself lives on disk;
* alarms go first; then live telemetry and the backlog share the window, so current data
  keeps flowing while an old backlog drains; backlog messages are marked ``replay``.

paho runs its network loop in its own thread; its callbacks hop onto the event loop
with ``call_soon_threadsafe`` and all state here is touched only from the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.config import GatewaySettings
from edge.payloads import mark_replay, status_payload
from edge.store import OutboxEntry, Store, StoreWorker
from vocab.model import now_ms

log = structlog.get_logger("edge.uplink")

# A message is "poison" (the broker drops the connection whenever it arrives, e.g. over
# its max_packet_size) when it is the oldest unacknowledged message at this many
# consecutive disconnects, each within POISON_WINDOW_S of connecting. It is then set
# aside in the store instead of being re-sent forever ahead of everything else.
POISON_DISCONNECTS = 3
UPLINK_RETRY_S = 2.0
REFUSED_RETRY_S = 60.0
POISON_WINDOW_S = 5.0

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


@dataclass(frozen=True)
class ResponseRoute:
    """MQTT 5 request/response: where the requester wants the reply, and its tag."""

    topic: str | None = None
    correlation: bytes | None = None


MessageCallback = Callable[[str, bytes, ResponseRoute], Awaitable[None]]


class MqttUplink:
    def __init__(self, settings: GatewaySettings, store: StoreWorker,
                 subscriptions: tuple[str, ...] = (),
                 on_message: MessageCallback | None = None) -> None:
        self.subscriptions = subscriptions
        self.on_message = on_message
        self.settings = settings
        self.store = store
        self.root = settings.topic_root
        self.topics = {"telemetry": f"{self.root}/telemetry", "alarm": f"{self.root}/alarms"}
        self.window = settings.mqtt.max_inflight
        self.health = UplinkHealth()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._inflight: dict[int, int] = {}  # paho mid -> outbox seq
        self._inflight_alarms: set[int] = set()
        self._acked: list[int] = []
        self._ack_wake = asyncio.Event()
        # Streams of seqs to send. paho itself re-sends its unacknowledged messages after a
        # reconnect, so within one process each seq is handed to paho once; after a
        # restart whatever is left in the outbox is sent again (same seq: at-least-once).
        # Backlog = what was queued before this process ran or while the link was down;
        # it is sent oldest first and marked "replay". Live = queued while connected.
        self._alarm_cursor = 0
        self._live_cursor = store.store.last_seq
        self._backlog: list[list[int]] = (
            [[0, store.store.last_seq]] if store.store.last_seq else []
        )
        self._pending_cut = False
        self._connected_at = 0.0
        self._suspect: tuple[int, int] | None = None  # (oldest in-flight seq, disconnects)
        self._poison: int | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self.client = self._make_client()

    def _make_client(self) -> mqtt.Client:
        cfg = self.settings.mqtt
        client_id = cfg.client_id or f"reservoir-edge-{self.settings.site.id}-" \
                                     f"{self.settings.gateway.id}"
        # A persistent session keeps the broker-side state of our in-flight QoS 1
        # messages across reconnects.
        if cfg.protocol == "5":
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                 protocol=mqtt.MQTTv5)
        else:
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                 clean_session=False, protocol=mqtt.MQTTv311)
        if cfg.username:
            client.username_pw_set(cfg.username, cfg.password())
        if cfg.tls is not None:
            client.tls_set(ca_certs=str(cfg.tls.ca_file),
                           certfile=str(cfg.tls.cert_file) if cfg.tls.cert_file else None,
                           keyfile=str(cfg.tls.key_file) if cfg.tls.key_file else None)
            client.tls_insecure_set(not cfg.tls.check_hostname)
        client.will_set(f"{self.root}/status", status_payload("offline"), qos=1, retain=True)
        self._attempt = 0  # failed connection attempts in a row (paho thread only)
        self._set_backoff(client)
        client.max_inflight_messages_set(self.window)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_connect_fail = self._on_connect_fail
        client.on_message = self._on_message
        return client

    def _set_backoff(self, client: mqtt.Client) -> None:
        """Jittered exponential backoff: many gateways of a district must not reconnect
        in lockstep when the platform's broker comes back."""
        cfg = self.settings.mqtt
        ceiling = min(cfg.reconnect_max_s, cfg.reconnect_min_s * 2 ** self._attempt)
        delay = random.uniform(ceiling / 2, ceiling)
        # min == max makes paho wait exactly this long before its next attempt.
        client.reconnect_delay_set(delay, delay)  # type: ignore[arg-type]

    # --- paho thread -> event loop -------------------------------------------------------

    def _call(self, fn, *args) -> None:  # type: ignore[no-untyped-def]
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(fn, *args)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        if not reason_code.is_failure:
            self._attempt = 0
            self._set_backoff(client)
        self._call(self._connected, not reason_code.is_failure, str(reason_code))

    def _on_connect_fail(self, client, userdata) -> None:  # type: ignore[no-untyped-def]
        self._attempt += 1
        self._set_backoff(client)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        self._attempt += 1
        self._set_backoff(client)
        self._call(self._disconnected, str(reason_code))

    def _on_message(self, client, userdata, message) -> None:  # type: ignore[no-untyped-def]
        props = getattr(message, "properties", None)
        response = ResponseRoute(getattr(props, "ResponseTopic", None),
                                 getattr(props, "CorrelationData", None))
        self._call(self._message, message.topic, bytes(message.payload), response)

    def _message(self, topic: str, payload: bytes, response: ResponseRoute) -> None:
        if self.on_message is not None and not self._stopping:
            task = asyncio.create_task(self.on_message(topic, payload, response))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        self._call(self._puback, mid, reason_code.is_failure)

    # --- event loop side -----------------------------------------------------------------

    def _connected(self, ok: bool, reason: str) -> None:
        if not ok:
            log.warning("mqtt_connect_refused", reason=reason)
            return
        self.health.connected = True
        self.health.connects += 1
        self.health.last_connect_ms = now_ms()
        self._connected_at = time.monotonic()
        self._wake.set()
        log.info("mqtt_connected", host=self.settings.mqtt.host, port=self.settings.mqtt.port)
        self.client.publish(f"{self.root}/status", status_payload("online"), qos=1, retain=True)
        for topic in self.subscriptions:
            self.client.subscribe(topic, qos=1)
        self._pending_cut = True
        self._wake.set()

    def _disconnected(self, reason: str) -> None:
        if self.health.connected:
            self.health.disconnects += 1
            log.warning("mqtt_disconnected", reason=reason, inflight=len(self._inflight))
            self._watch_for_poison(reason)
        self.health.connected = False

    def _watch_for_poison(self, reason: str) -> None:
        quick = time.monotonic() - self._connected_at < POISON_WINDOW_S
        if not self._inflight or not quick or self._stopping:
            self._suspect = None
            return
        # Alarms are never set aside: they are small (never over a broker's packet limit),
        # and a flapping link must not park one. Only telemetry can be poison.
        telemetry = [seq for seq in self._inflight.values() if seq not in self._inflight_alarms]
        if not telemetry or min(self._inflight.values()) in self._inflight_alarms:
            self._suspect = None
            return
        oldest = min(telemetry)
        count = self._suspect[1] + 1 if self._suspect and self._suspect[0] == oldest else 1
        self._suspect = (oldest, count)
        if count >= POISON_DISCONNECTS:
            log.error("mqtt_poison_message", seq=oldest, disconnects=count, reason=reason)
            self._poison = oldest
            self._suspect = None
            self._wake.set()

    def _puback(self, mid: int, failed: bool) -> None:
        seq = self._inflight.pop(mid, None)
        if seq is not None:
            self._inflight_alarms.discard(seq)
        if seq is None:
            return  # the status message, or a duplicate ack
        if failed:
            # An MQTT 5 broker refused it: it stays in the outbox and is offered again
            # after a pause (the refusal may be a passing quota), never deleted unseen.
            self.health.refused += 1
            log.error("mqtt_publish_refused", seq=seq)
            task = asyncio.create_task(self._retry_refused(seq))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            self._acked.append(seq)
            self._ack_wake.set()
        self._wake.set()

    def publish_now(self, topic: str, payload: str, retain: bool = False,
                    correlation: bytes | None = None) -> bool:
        """Publish outside the outbox (health, command replies): only while connected,
        because such messages are worthless when late."""
        if not self.health.connected:
            return False
        properties = None
        if correlation is not None and self.settings.mqtt.protocol == "5":
            properties = Properties(PacketTypes.PUBLISH)
            properties.CorrelationData = correlation
        self.client.publish(topic, payload, qos=1, retain=retain, properties=properties)
        return True

    def _rewind(self, after_seq: int, to_seq: int) -> None:
        """Runs on the store thread, like every change of the cursors: send the seqs in
        (after_seq, to_seq] again, as backlog, alarms first."""
        self._backlog.insert(0, [after_seq, to_seq])
        self._alarm_cursor = min(self._alarm_cursor, after_seq)

    async def resend(self, from_seq: int, to_seq: int) -> None:
        """Send a requeued seq range again (telemetry marked replay)."""
        await self.store.call(self._rewind, from_seq - 1, to_seq)
        self._wake.set()

    def notify(self) -> None:
        """New messages were committed to the outbox."""
        self._wake.set()

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._connect()
        self.client.loop_start()
        ack_task = asyncio.create_task(self._ack_writer(), name="outbox-acks")
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
            ack_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ack_task
            await self._write_acks()

    async def _retry_refused(self, seq: int) -> None:
        await asyncio.sleep(REFUSED_RETRY_S)
        await self.store.call(self._rewind, seq - 1, seq)
        self._wake.set()

    async def _step(self) -> None:
        if self._poison is not None:
            seq, self._poison = self._poison, None
            await self._set_aside(seq)
        if self.health.connected:
            if self._pending_cut:
                self._pending_cut = False
                await self.store.call(self._cut_backlog)
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
        try:
            await self._write_acks()
            await self.store.call(self.store.store.flush_acks)
            await self.store.call(self.store.store.set_aside, seq, "broker drops the "
                                  "connection on this message")
            self.health.set_aside += 1
        finally:
            # Whatever happened to the bookkeeping, a working client comes back.
            restart_from = (others[0] if others else seq) - 1
            await self.store.call(self._rewind, restart_from, others[-1] if others else seq)
            self.client = self._make_client()
            self._connect()
            self.client.loop_start()

    def _connect(self) -> None:
        cfg = self.settings.mqtt
        if cfg.protocol == "5":
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = cfg.session_expiry_s
            self.client.connect_async(cfg.host, cfg.port, keepalive=cfg.keepalive_s,
                                      clean_start=False, properties=properties)
        else:
            self.client.connect_async(cfg.host, cfg.port, keepalive=cfg.keepalive_s)

    async def _fill_window(self) -> None:
        while self.health.connected and not self._stopping:
            room = self.window - len(self._inflight)
            if room <= 0:
                return
            entries = await self.store.call(self._next_batch, room)
            if not entries:
                return
            for entry, replay in entries:
                payload = mark_replay(entry.payload) if replay else entry.payload
                info = self.client.publish(self.topics[entry.kind], payload, qos=1)
                self._inflight[info.mid] = entry.seq
                if entry.kind == "alarm":
                    self._inflight_alarms.add(entry.seq)
                self.health.published += 1

    def _cut_backlog(self) -> None:
        """After a (re)connect: what waited longer than REPLAY_AGE_S becomes backlog.

        Runs on the store thread. Messages queued in the last seconds (the first poll of
        a fresh start, say) are still current and go out as live data.
        """
        cut = self.store.store.last_telemetry_seq_before(self._live_cursor,
                                                         now_ms() - REPLAY_AGE_S * 1000)
        if cut > self._live_cursor:
            self._backlog.append([self._live_cursor, cut])
            self._live_cursor = cut

    def _next_batch(self, room: int) -> list[tuple[OutboxEntry, bool]]:
        """Runs on the store thread: the next messages to send, in priority order."""
        store: Store = self.store.store
        alarms = store.pending("alarm", self._alarm_cursor, room)
        if alarms:
            self._alarm_cursor = alarms[-1].seq
        batch = [(e, False) for e in alarms]
        room -= len(alarms)
        if room <= 0:
            return batch
        # Live data gets at least half the remaining window so it stays current while a
        # long backlog drains.
        live = store.pending("telemetry", self._live_cursor, max(1, room // 2))
        if live:
            self._live_cursor = live[-1].seq
        room -= len(live)
        while room > 0 and self._backlog:
            low, high = self._backlog[0]
            older = [e for e in store.pending("telemetry", low, room) if e.seq <= high]
            if not older:
                self._backlog.pop(0)
                continue
            self._backlog[0][0] = older[-1].seq
            batch += [(e, True) for e in older]
            room -= len(older)
        return batch + [(e, False) for e in live]

    @property
    def backlog_ranges(self) -> int:
        return len(self._backlog)

    async def _ack_writer(self) -> None:
        while True:
            await self._ack_wake.wait()
            self._ack_wake.clear()
            # Batch deletes: one transaction per burst of acks rather than per message.
            await asyncio.sleep(0.05)
            await self._write_acks()

    async def _write_acks(self) -> None:
        if not self._acked:
            return
        seqs, self._acked = self._acked, []
        try:
            await self.store.call(self.store.store.ack_outbox, seqs)
        except Exception:
            # Not deleting is safe: the message is sent again later and the platform
            # drops the duplicate by seq.
            log.exception("outbox_ack_write_failed", count=len(seqs))
            return
        self.health.acked += len(seqs)

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    async def drain(self, timeout_s: float) -> bool:
        """Before a stop: while connected, send what the outbox holds and wait for the
        acks (bounded by ``timeout_s``); True if nothing is left unacknowledged.

        Whatever is left stays in the outbox and goes out after the next start.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            await self._write_acks()
            if not self._inflight:
                stats = await self.store.call(self.store.store.outbox_stats)
                if stats.depth == 0 or not self.health.connected:
                    break
            self._wake.set()
            await asyncio.sleep(0.05)
        await self._write_acks()
        return not self._inflight

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Publish ``offline``, disconnect cleanly and stop the network thread."""
        self._stopping = True
        self._wake.set()
        if self.health.connected:
            info = self.client.publish(f"{self.root}/status", status_payload("offline"),
                                       qos=1, retain=True)
            deadline = asyncio.get_running_loop().time() + timeout_s
            while not info.is_published() and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.02)
        self.client.disconnect()
        await asyncio.get_running_loop().run_in_executor(None, self.client.loop_stop)
