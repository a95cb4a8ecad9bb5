"""The MQTT uplink's settings (the ``mqtt`` section of the configuration)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from edge.payloads import DEFAULT_MAX_MESSAGE_BYTES
from vocab.checking import Report
from vocab.configbase import StrictModel

# The default in-flight deadline, in keep-alive intervals: a broker that answers PINGREQ
# but has not acknowledged one message in three keep-alives is not merely slow.
INFLIGHT_DEADLINE_KEEPALIVES = 3


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
    # A message unacknowledged this long after it was sent means the broker (or a proxy
    # before it) has stalled while still answering keep-alives: the uplink reconnects and
    # sends it again. Unset: INFLIGHT_DEADLINE_KEEPALIVES keep-alive intervals.
    inflight_deadline_s: float | None = Field(default=None, gt=0, le=86400)
    # Reconnect backoff: doubles from min to max, each wait drawn in [wait/2, wait].
    reconnect_min_s: float = Field(default=1.0, gt=0, le=3600)
    reconnect_max_s: float = Field(default=10.0, gt=0, le=3600)
    # 3.1.1 works with every broker a district may run; only Mosquitto speaks 5 among
    # the ones measured (lessons.md). With 5, command replies also honour the request's
    # response topic and correlation data.
    protocol: Literal["3.1.1", "5"] = "3.1.1"
    # The most JSON a telemetry message gathers from a window's small polls (a poll is
    # never split: one bigger than this is a message of its own). Keep it under the
    # broker's limit: a broker drops the connection on a larger packet, and the message is
    # then set aside with every device's readings in it. ThingsBoard's MQTT transport
    # takes 65,536 B by default, AWS IoT Core 128 KB; the topic and headers need ~100 B.
    max_message_bytes: int = Field(default=DEFAULT_MAX_MESSAGE_BYTES, ge=1024,
                                   le=268_435_455)
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

    @property
    def inflight_deadline(self) -> float:
        """Seconds a sent message may wait for its PUBACK before the uplink is stalled."""
        if self.inflight_deadline_s is not None:
            return self.inflight_deadline_s
        return INFLIGHT_DEADLINE_KEEPALIVES * self.keepalive_s

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
