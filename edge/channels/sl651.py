"""SL 651 centres as a service of the gateway: its entry in the table of edge/services.py.

Reports to hydrological centres in SL 651-2014 (docs/sl651.md): one outbox channel per
centre (``sl651-centre-N``, kind ``sl651``: the reports), each with its own cursor, and one
(``sl651-alarms``) that hands the reporter the alarm transitions for the added reports.
The section's models and checks are edge/sl651_config.py; the service
(edge/channels/sl651_service.py) is imported only when a site configures the section.
"""

from __future__ import annotations

from edge.config import GatewaySettings
from edge.ports import Ports, Service, ServiceType


def channels(settings: GatewaySettings) -> dict[str, tuple[str, ...]]:
    config = settings.sl651
    if config is None:
        return {}
    # The frames and the reporter (about 0.4 MiB) load only with an sl651 section.
    from edge.channels.sl651_messages import KIND
    from edge.channels.sl651_reporter import ALARMS_CHANNEL

    found: dict[str, tuple[str, ...]] = {ALARMS_CHANNEL: ("alarm",)}
    found.update({name: (KIND,) for name in config.channel_names()})
    return found


def build(settings: GatewaySettings, ports: Ports) -> Service:
    from edge.channels.sl651_service import Sl651Service

    return Sl651Service(settings, ports)


SERVICE_TYPE = ServiceType("sl651", lambda s: s.sl651, channels, build)

__all__ = ["SERVICE_TYPE", "build", "channels"]
