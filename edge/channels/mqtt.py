"""The MQTT channel: the district platform's uplink, draining the outbox to a broker.

Store-and-forward as the platform needs it on a flaky 4G link:

* a message leaves the outbox only on the PUBACK of its own message id, never when
  ``publish()`` returns (losing the seconds before an outage is noticed is the classic
  failure of other gateways, see lessons.md);
* at most ``max_inflight`` messages are unacknowledged at once, so memory stays bounded
  however long the backlog; the backlog itself lives on disk;
* what goes next (alarms first, live data beside the backlog, which messages are
  replays) is the outbox's to say (edge/outbox.py); this module only speaks MQTT.

paho runs its network loop in its own thread; its callbacks hop onto the event loop
with ``call_soon_threadsafe`` and all state here is touched only from the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import Field, field_validator, model_validator

from edge.outbox import ChannelOutbox
from edge.payloads import mark_replay, status_payload
from vocab.checking import Report
from vocab.configbase import StrictModel
from vocab.model import now_ms

log = structlog.get_logger("edge.channels.mqtt")

# The kinds of outbox message this channel takes.
KINDS = ("telemetry", "alarm", "event")


class TlsConfig(StrictModel):
    """TLS to the broker: the platform's CA, and a client certificate where required."""

    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None
    # Only for brokers reached by IP whose certificate lacks that IP: weakens TLS.
    check_hostname: bool = True

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (the client certificate "
                             "and its private key)")
        return self


class MqttConfig(StrictModel):
    host: str
    port: int = Field(default=1883, ge=1, le=65535)
    topic_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")] = \
        "reservoir"
    client_id: str | None = None
    username: str | None = None
    # Secrets never sit in the YAML: name an environment variable or a file.
    password_env: str | None = None
    password_file: Path | None = None
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    max_inflight: int = Field(default=20, ge=1, le=1000)
    # Reconnect backoff: doubles from min to max, each wait drawn in [wait/2, wait].
    reconnect_min_s: float = Field(default=1.0, gt=0, le=3600)
    reconnect_max_s: float = Field(default=10.0, gt=0, le=3600)
    # 3.1.1 works with every broker a district may run; only Mosquitto speaks 5 among
    # the ones measured (lessons.md). With 5, command replies also honour the request's
    # response topic and correlation data.
    protocol: Literal["3.1.1", "5"] = "3.1.1"
    # MQTT 5 session expiry: how long the broker keeps our session while we are away.
    session_expiry_s: int = Field(default=7 * 24 * 3600, ge=0)
    tls: TlsConfig | None = None

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol_as_text(cls, value: object) -> object:
        # YAML reads an unquoted 5 as a number.
        return str(value) if isinstance(value, int) else value

    @model_validator(mode="after")
    def _consistent(self) -> MqttConfig:
        if self.password_env and self.password_file:
            raise ValueError("give password_env or password_file, not both")
        if (self.password_env or self.password_file) and not self.username:
            raise ValueError("a password needs a username (password_env/password_file are "
                             "only sent with one)")
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError(f"reconnect_min_s ({self.reconnect_min_s}) is above "
                             f"reconnect_max_s ({self.reconnect_max_s})")
        return self

    def password(self) -> str | None:
        """Read the password from its environment variable or file (never logged)."""
        if self.password_env:
            value = os.environ.get(self.password_env)
            if value is None:
                raise ValueError(f"environment variable {self.password_env} is not set")
            return value
        if self.password_file:
            return self.password_file.read_text(encoding="utf-8").strip()
        return None


def check(config: MqttConfig, report: Report) -> None:
    """Files the configuration names must exist (paths relative to ``mqtt``)."""
    tls = config.tls
    if tls is not None:
        for key in ("ca_file", "cert_file", "key_file"):
            file = getattr(tls, key)
            if file is not None and not file.is_file():
                report(("tls", key), f"{file}: no such file")
    if config.password_file is not None and not config.password_file.is_file():
        report(("password_file",), f"{config.password_file}: no such file")


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
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._inflight: dict[int, int] = {}  # paho mid -> outbox seq
        self._inflight_alarms: set[int] = set()
        # paho itself re-sends its unacknowledged messages after a reconnect, so within
        # one process each seq is handed to paho once; after a restart whatever is left
        # in the outbox is sent again (same seq: at-least-once).
        self._pending_cut = False
        self._connected_at = 0.0
        # (seqs in flight at each of the last quick disconnects, how many disconnects)
        self._suspect: tuple[set[int], int] | None = None
        self._sizes: dict[int, int] = {}  # in-flight seq -> payload bytes
        self._poison: int | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self.client = self._make_client()

    def _make_client(self) -> mqtt.Client:
        cfg = self.config
        client_id = cfg.client_id or self.client_id
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
        cfg = self.config
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
        self.health_figures.connected = True
        self.health_figures.connects += 1
        self.health_figures.last_connect_ms = now_ms()
        self._connected_at = time.monotonic()
        log.info("mqtt_connected", host=self.config.host, port=self.config.port)
        self.client.publish(f"{self.root}/status", status_payload("online"), qos=1, retain=True)
        for topic in self.subscriptions:
            self.client.subscribe(topic, qos=1)
        self._pending_cut = True
        self._wake.set()

    def _disconnected(self, reason: str) -> None:
        if self.health_figures.connected:
            self.health_figures.disconnects += 1
            log.warning("mqtt_disconnected", reason=reason, inflight=len(self._inflight))
            self._watch_for_poison(reason)
        self.health_figures.connected = False

    def _watch_for_poison(self, reason: str) -> None:
        quick = time.monotonic() - self._connected_at < POISON_WINDOW_S
        if not self._inflight or not quick or self._stopping:
            self._suspect = None
            return
        # Alarms are never set aside: they are small (never over a broker's packet limit),
        # and a flapping link must not park one. Only telemetry can be poison.
        telemetry = {seq for seq in self._inflight.values() if seq not in self._inflight_alarms}
        if not telemetry or min(self._inflight.values()) in self._inflight_alarms:
            self._suspect = None
            return
        # The poison message is in flight at every one of the quick disconnects; a small
        # message sent just before it may be too, when the broker drops the link before
        # its PUBACK is read. Of those in flight every time, the largest is the one a
        # broker refuses (over its max_packet_size), so that is the one set aside.
        candidates = telemetry & self._suspect[0] if self._suspect else telemetry
        count = self._suspect[1] + 1 if self._suspect and candidates else 1
        self._suspect = (candidates or telemetry, count)
        if count >= POISON_DISCONNECTS:
            poison = max(self._suspect[0], key=lambda seq: (self._sizes.get(seq, 0), -seq))
            log.error("mqtt_poison_message", seq=poison, disconnects=count, reason=reason,
                      bytes=self._sizes.get(poison))
            self._poison = poison
            self._suspect = None
            self._wake.set()

    def _puback(self, mid: int, failed: bool) -> None:
        seq = self._inflight.pop(mid, None)
        if seq is not None:
            self._inflight_alarms.discard(seq)
            self._sizes.pop(seq, None)
        if seq is None:
            return  # the status message, or a duplicate ack
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

    def publish_now(self, topic: str, payload: str, retain: bool = False,
                    correlation: bytes | None = None) -> bool:
        """Publish outside the outbox (health, command replies): only while connected,
        because such messages are worthless when late."""
        if not self.health_figures.connected:
            return False
        properties = None
        if correlation is not None and self.config.protocol == "5":
            properties = Properties(PacketTypes.PUBLISH)
            properties.CorrelationData = correlation
        self.client.publish(topic, payload, qos=1, retain=retain, properties=properties)
        return True

    async def resend(self, from_seq: int, to_seq: int) -> None:
        """Send a requeued seq range again (telemetry marked replay)."""
        await self.outbox.rewind(from_seq, to_seq)
        self._wake.set()

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._connect()
        self.client.loop_start()
        waiting = asyncio.create_task(self._outbox_wakes(), name="mqtt-outbox-wakes")
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
            waiting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiting

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
                self._sizes[message.seq] = len(payload)
                if message.kind != "telemetry":
                    self._inflight_alarms.add(message.seq)
                self.health_figures.published += 1

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def health(self) -> dict[str, object]:
        h = self.health_figures
        return {"connected": h.connected, "connects": h.connects,
                "disconnects": h.disconnects, "published": h.published, "acked": h.acked,
                "set_aside": h.set_aside, "refused": h.refused, "inflight": self.inflight}

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
