"""paho's callbacks, which run in paho's network thread, handed over to the event loop.

Everything the MQTT channel keeps is touched only from the event loop; this bridge is the
one place that runs in paho's thread. It follows each connection attempt
(``ConnectAttempts``), keeps the Last Will stamped and the backoff stepped as paho
reconnects on its own, and passes every event on with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from edge.channels.mqtt_config import MqttConfig
from edge.channels.mqtt_session import (
    ConnectAttempts,
    ConnectFailure,
    UplinkClient,
    set_backoff,
    set_will,
)

log = structlog.get_logger("edge.channels.mqtt")

# What a PUBLISH adds to its payload besides the topic: fixed header, topic length,
# packet id, MQTT 5 properties.
PUBLISH_OVERHEAD_BYTES = 16


@dataclass(frozen=True)
class ResponseRoute:
    """MQTT 5 request/response: where the requester wants the reply, and its tag."""

    topic: str | None = None
    correlation: bytes | None = None


@dataclass(frozen=True)
class ChannelEvents:
    """What the channel does, on the event loop, with each of paho's events."""

    connected: Callable[[], None]
    disconnected: Callable[[str], None]
    message: Callable[[str, bytes, ResponseRoute], None]
    puback: Callable[[int, bool], None]
    connect_failed: Callable[[ConnectFailure], None]


class PahoBridge:
    """Installs itself as a client's callbacks (``attach``; again for a client made anew
    after a poison message); ``loop`` is set once the channel runs."""

    def __init__(self, config: MqttConfig, status_topic: str, events: ChannelEvents) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.config = config
        self.status_topic = status_topic
        self.events = events
        # Failed connection attempts in a row and why (paho thread only).
        self.attempts = ConnectAttempts(lambda failure: self.call(events.connect_failed,
                                                                  failure))
        self.broker_packet_limit: int | None = None

    def attach(self, client: UplinkClient) -> None:
        set_backoff(client, self.config, 0)
        client.on_pre_connect = self.on_pre_connect
        client.on_connect = self.on_connect
        client.on_disconnect = self.on_disconnect
        client.on_publish = self.on_publish
        client.on_connect_fail = self.on_connect_fail
        client.on_message = self.on_message

    def call(self, fn: Callable[..., None], *args: Any) -> None:
        if self.loop is not None and not self.loop.is_closed():
            # A loop closing between the check and the call raises; the event is moot then.
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(fn, *args)

    # paho's callback signatures (CallbackAPIVersion.VERSION2) carry untyped arguments.
    def on_pre_connect(self, client: UplinkClient, userdata: Any) -> None:
        self.attempts.starting(client)
        set_will(client, self.status_topic)

    def on_connect(self, client: UplinkClient, userdata: Any, flags: Any, reason_code: Any,
                   properties: Any) -> None:
        refusal = str(reason_code) if reason_code.is_failure else None
        self.attempts.connack(refusal)
        set_backoff(client, self.config, self.attempts.failed_in_a_row)
        if refusal is None:
            self.note_packet_limit(getattr(properties, "MaximumPacketSize", None))
            self.call(self.events.connected)

    def note_packet_limit(self, limit: int | None) -> None:
        """An MQTT 5 broker says in its CONNACK the largest packet it takes. Telemetry
        messages were cut to ``max_message_bytes`` when they were committed: if the
        broker takes less, it will drop the connection on the larger ones and they will
        be set aside. Said once per limit, as an error, so the site file can be fixed."""
        if limit == self.broker_packet_limit:
            return
        self.broker_packet_limit = limit
        telemetry_topic = self.status_topic.rsplit("/", 1)[0] + "/telemetry"
        beside_payload = PUBLISH_OVERHEAD_BYTES + len(telemetry_topic.encode())
        bound = self.config.max_message_bytes
        if limit is not None and limit < bound + beside_payload:
            log.error("mqtt_broker_packet_limit_below_max_message", broker_limit=limit,
                      max_message_bytes=bound,
                      hint=f"set mqtt.max_message_bytes to {limit - beside_payload} or less")

    def on_connect_fail(self, client: UplinkClient, userdata: Any) -> None:
        self.attempts.socket_failed(client)
        set_backoff(client, self.config, self.attempts.failed_in_a_row)

    def on_disconnect(self, client: UplinkClient, userdata: Any, flags: Any, reason_code: Any,
                      properties: Any) -> None:
        if not self.attempts.disconnected(reason_code):
            # A connection that was up: start the backoff over from its first step.
            self.attempts.failed_in_a_row = 1
        set_backoff(client, self.config, self.attempts.failed_in_a_row)
        self.call(self.events.disconnected, str(reason_code))

    def on_message(self, client: UplinkClient, userdata: Any, message: Any) -> None:
        props = getattr(message, "properties", None)
        response = ResponseRoute(getattr(props, "ResponseTopic", None),
                                 getattr(props, "CorrelationData", None))
        self.call(self.events.message, message.topic, bytes(message.payload), response)

    def on_publish(self, client: UplinkClient, userdata: Any, mid: int, reason_code: Any,
                   properties: Any) -> None:
        self.call(self.events.puback, mid, reason_code.is_failure)
