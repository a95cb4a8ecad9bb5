"""The MQTT uplink's connection: the paho client, its Last Will, and why connecting failed.

paho retries on its own and says little about a failed attempt: ``on_connect_fail``
carries no reason, and a broker that closes the socket before its CONNACK (RabbitMQ
does to an MQTT 5 client) only shows as a disconnect of a connection that never was.
``ConnectAttempts`` follows each attempt from ``on_pre_connect`` to its outcome in paho's
thread and hands one ``ConnectFailure`` per failed attempt to the event loop.
"""

from __future__ import annotations

import random
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge.channels.mqtt_config import MqttConfig
from edge.payloads import status_payload

if TYPE_CHECKING:
    from paho.mqtt.client import SocketLike


@dataclass(frozen=True)
class ConnectFailure:
    """Why one connection attempt failed: ``reason`` is one of REASONS, ``detail`` the
    broker's CONNACK reason or the error's own text."""

    reason: str
    detail: str


REASONS = ("refused", "closed_before_connack", "no_connack", "connection_refused", "tls",
           "dns", "timeout", "network")


def failure_of(error: OSError) -> ConnectFailure:
    """The reason an exception from opening the connection stands for."""
    if isinstance(error, socket.gaierror):
        return ConnectFailure("dns", str(error))
    if isinstance(error, ssl.SSLError | ssl.CertificateError):
        return ConnectFailure("tls", str(error))
    if isinstance(error, TimeoutError):
        return ConnectFailure("timeout", str(error) or "connect timed out")
    if isinstance(error, ConnectionRefusedError):
        return ConnectFailure("connection_refused", str(error))
    return ConnectFailure("network", str(error))


class UplinkClient(mqtt.Client):
    """paho's client, keeping the exception that ended its last attempt to connect."""

    connect_error: OSError | None = None

    def _create_socket(self) -> SocketLike:
        # paho 2.x swallows this exception in its network loop (it only calls
        # on_connect_fail); this is the one place where DNS, TCP and TLS errors are seen.
        try:
            return super()._create_socket()
        except OSError as error:
            self.connect_error = error
            raise


class ConnectAttempts:
    """Follows paho's connection attempts (paho's thread only) and reports each failure.

    ``report`` is called in paho's thread, once per failed attempt.
    """

    def __init__(self, report: Callable[[ConnectFailure], None]) -> None:
        self._report = report
        self._connack = False  # this attempt got a CONNACK
        self._refusal: str | None = None  # ... and it refused us, for this reason
        self.failed_in_a_row = 0

    def starting(self, client: UplinkClient) -> None:
        client.connect_error = None
        self._connack = False
        self._refusal = None

    def connack(self, refusal: str | None) -> None:
        self._connack = True
        self._refusal = refusal
        if refusal is None:
            self.failed_in_a_row = 0

    def socket_failed(self, client: UplinkClient) -> None:
        error = client.connect_error
        self._failed(failure_of(error) if error is not None
                     else ConnectFailure("network", "could not open the connection"))

    def disconnected(self, reason_code: object) -> bool:
        """A disconnect: True if it ended an attempt that never connected."""
        if self._connack and self._refusal is None:
            return False
        if self._refusal is not None:
            self._failed(ConnectFailure("refused", self._refusal))
        elif str(reason_code) == "Keep alive timeout":
            self._failed(ConnectFailure("no_connack", "no CONNACK within the keep-alive"))
        else:
            # RabbitMQ does this to MQTT 5; so does any broker that will not speak ours.
            self._failed(ConnectFailure(
                "closed_before_connack",
                f"the broker closed the connection before its CONNACK ({reason_code})"))
        self._connack = True  # reported: a second callback of the same attempt is not
        self._refusal = None
        return True

    def _failed(self, failure: ConnectFailure) -> None:
        self.failed_in_a_row += 1
        self._report(failure)


def make_client(config: MqttConfig, client_id: str, status_topic: str,
                window: int) -> UplinkClient:
    """A paho client for the uplink, without its callbacks."""
    # A persistent session keeps the broker-side state of our in-flight QoS 1 messages
    # across reconnects.
    if config.protocol == "5":
        client = UplinkClient(CallbackAPIVersion.VERSION2, client_id=client_id,
                              protocol=mqtt.MQTTv5)
    else:
        client = UplinkClient(CallbackAPIVersion.VERSION2, client_id=client_id,
                              clean_session=False, protocol=mqtt.MQTTv311)
    if config.username:
        client.username_pw_set(config.username, config.password())
    if config.tls is not None:
        tls = config.tls
        client.tls_set(ca_certs=str(tls.ca_file),
                       certfile=str(tls.cert_file) if tls.cert_file else None,
                       keyfile=str(tls.key_file) if tls.key_file else None)
        client.tls_insecure_set(not tls.check_hostname)
    set_will(client, status_topic)
    client.max_inflight_messages_set(window)
    return client


def set_will(client: mqtt.Client, status_topic: str) -> None:
    """The Last Will, stamped now: called before every connection attempt, so the will a
    broker publishes carries the time of the connection it belongs to (docs/mqtt.md)."""
    client.will_set(status_topic, status_payload("offline"), qos=1, retain=True)


def set_backoff(client: mqtt.Client, config: MqttConfig, failed_in_a_row: int) -> None:
    """Jittered exponential backoff: many gateways of a district must not reconnect
    in lockstep when the platform's broker comes back."""
    ceiling = min(config.reconnect_max_s, config.reconnect_min_s * 2 ** failed_in_a_row)
    delay = random.uniform(ceiling / 2, ceiling)
    # min == max makes paho wait exactly this long before its next attempt.
    client.reconnect_delay_set(delay, delay)  # type: ignore[arg-type]  # paho types int, takes float
