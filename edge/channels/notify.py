"""Notifications as a service of the gateway: its entry in the table of edge/services.py.

SMS to the people on duty through the site's 4G modem, sirens by relay, escalation until
someone acknowledges (edge/channels/notify_service.py); the ``notify`` section's models
and checks are edge/channels/notify_config.py. The service and the modem driver are
imported only when a site configures the section.
"""

from __future__ import annotations

from edge.channels.notify_config import NotifyConfig
from edge.config import GatewaySettings
from edge.ports import Ports, Service, ServiceType

CHANNEL = "notify"


def channels(settings: GatewaySettings) -> dict[str, tuple[str, ...]]:
    # Every alarm transition: raised and escalated start and climb the ladder,
    # acknowledged and cleared (by any path: SMS, MQTT, the page, a button) stop it.
    return {CHANNEL: ("alarm",)}


def build(settings: GatewaySettings, ports: Ports) -> Service:
    from edge.channels.notify_service import NotifyService

    return NotifyService(settings, ports)


SERVICE_TYPE = ServiceType("notify", lambda s: s.notify, channels, build)

__all__ = ["CHANNEL", "SERVICE_TYPE", "NotifyConfig", "build", "channels"]
