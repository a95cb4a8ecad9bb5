"""The ``web:`` section of a site file: where the keeper's page listens, and its PIN.

```yaml
web:
  listen: 192.168.1.10:8080   # the gateway's LAN address (or 127.0.0.1:8080); IP literal
  language: zh                # zh (default) or en
  pin_hash: "$scrypt$ln=14,r=8,p=1$...$..."   # `edge hash-pin`; without it: read-only
  lockout_after: 5            # wrong PINs from one client before it is locked out
  lockout_for: 15min          # how long
  lockout_site_after: 20      # wrong PINs from all clients together before PIN entry stops
```

The page is off unless the section is there. It listens on one given address, never on
all interfaces: a gateway's 4G interface must not expose the keeper's page.
"""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import Field, field_validator, model_validator

from edge.web.pin import PinHash, parse_pin_hash
from vocab.configbase import StrictModel
from vocab.durations import Duration

__all__ = ["WebConfig", "parse_listen"]

MAX_LOCKOUT_S = 86_400.0


def parse_listen(text: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6) with an IP literal host; ValueError says why."""
    if not isinstance(text, str):
        raise ValueError("listen must be text such as 127.0.0.1:8080")
    value = text.strip()
    if value.startswith("["):
        host, sep, port_text = value[1:].partition("]:")
    else:
        host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text:
        raise ValueError(f"listen {text!r} is not host:port (e.g. 127.0.0.1:8080 or "
                         "[::1]:8080)")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"listen {text!r}: port must be a number 1-65535")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"listen {text!r}: {host!r} is not an IP address (give the "
                         "gateway's LAN address or 127.0.0.1, not a host name)") from None
    if address.is_unspecified:
        raise ValueError(f"listen {text!r}: listening on all interfaces would expose the "
                         "page on the uplink too; give the LAN address or 127.0.0.1")
    if address.is_multicast:
        raise ValueError(f"listen {text!r}: {host} is a multicast address")
    return str(address), int(port_text)


class WebConfig(StrictModel):
    """The keeper's page: off unless configured."""

    listen: str
    language: Literal["zh", "en"] = "zh"
    pin_hash: str | None = None
    lockout_after: int = Field(default=5, ge=1, le=100)
    lockout_for: Duration = 900.0
    lockout_site_after: int = Field(default=20, ge=1, le=10_000)

    @field_validator("listen")
    @classmethod
    def _valid_listen(cls, value: str) -> str:
        parse_listen(value)
        return value.strip()

    @field_validator("pin_hash")
    @classmethod
    def _valid_hash(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parse_pin_hash(value)
        return value.strip()

    @field_validator("lockout_for")
    @classmethod
    def _bounded_lockout(cls, value: float) -> float:
        if value > MAX_LOCKOUT_S:
            raise ValueError("lockout_for is at most 1 day (a longer one only locks the "
                             "keeper out)")
        return value

    @model_validator(mode="after")
    def _site_limit(self) -> WebConfig:
        if self.lockout_site_after < self.lockout_after:
            raise ValueError(f"lockout_site_after ({self.lockout_site_after}) is below "
                             f"lockout_after ({self.lockout_after})")
        return self

    @property
    def host(self) -> str:
        return parse_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return parse_listen(self.listen)[1]

    @property
    def pin(self) -> PinHash | None:
        return parse_pin_hash(self.pin_hash) if self.pin_hash else None
