"""The optional parts a site may configure beside the MQTT uplink: one table.

Each entry is a ``ServiceType`` (edge/ports.py) declared by its own module: SL 651
centres, notifications by SMS and siren, the keeper's page.
"""

from __future__ import annotations

from edge.channels import notify, sl651
from edge.config import GatewaySettings
from edge.ports import ServiceType
from edge.web import service as web

SERVICE_TYPES: tuple[ServiceType, ...] = (notify.SERVICE_TYPE, web.SERVICE_TYPE,
                                          sl651.SERVICE_TYPE)


def configured(settings: GatewaySettings) -> list[ServiceType]:
    return [t for t in SERVICE_TYPES if t.section(settings) is not None]
