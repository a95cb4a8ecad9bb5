"""The ``notify`` section: who is texted about which alarm, and which sirens sound.

District practice is that an anomaly goes at once to the people on duty: the reservoir
keeper, then the township water officer (水利员), then the village grid staff (网格员),
and small reservoirs carry a siren or loudspeaker on a relay for the people downstream.
This module holds the models of that section (contacts, the escalation ladder, sirens,
the acknowledgement button) and the checks that need the rest of the site (buses,
devices, points). It is imported with every configuration, so it stays light: the modem
driver and the service are loaded only when the section is there (edge/channels/notify.py).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator

from drivers.modem_config import ModemConfig
from vocab.checking import PathKey, Report
from vocab.configbase import StrictModel
from vocab.durations import Duration
from vocab.ids import Ident, PointRef, SeverityName

if TYPE_CHECKING:
    from edge.config import GatewaySettings

# ITU-T E.164: a country code and a subscriber number, 15 digits at most, written with
# the leading + so that a reply from the network (which always gives it) matches.
E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
_SEPARATORS = re.compile(r"[\s\-()]")
MODBUS_BUS_TYPES = ("modbus_rtu", "modbus_tcp")


def e164(value: str) -> str:
    """The number without spaces, dashes or brackets; ValueError unless E.164."""
    compact = _SEPARATORS.sub("", value)
    if not E164.match(compact):
        raise ValueError(f"{value!r} is not an E.164 phone number: write + and the country "
                         "code, then the number, e.g. +8613800000001 (at most 15 digits)")
    return compact


class ContactConfig(StrictModel):
    """A person on duty who may be texted and may acknowledge by reply."""

    id: Ident
    name: str = Field(default="", max_length=40,
                      description="How texts and acknowledgements name them, e.g. 王师傅")
    phone: str = Field(description="E.164, e.g. +8613800000001")

    @field_validator("phone")
    @classmethod
    def _e164(cls, value: str) -> str:
        return e164(value)

    @property
    def label(self) -> str:
        return self.name or self.id


class TierConfig(StrictModel):
    """One rung of the ladder: whom to add, how long after the alarm, from which
    severity on."""

    after_min: float = Field(ge=0, le=10080, description="Minutes after the alarm was "
                             "raised without acknowledgement; fractions allowed (0.25 = 15 s)")
    contacts: list[Ident] = Field(min_length=1)
    min_severity: SeverityName = "warning"


class SirenConfig(StrictModel):
    """A siren, loudspeaker or beacon on a coil of a Modbus relay module."""

    id: Ident
    bus: Ident
    unit: int = Field(ge=1, le=247, description="Modbus address of the relay module")
    coil: int = Field(ge=0, le=65535, description="The relay's coil (0 = first relay)")
    min_severity: SeverityName = "alarm"
    on_s: float = Field(default=5.0, ge=1, le=3600, description="Seconds on in each cycle")
    off_s: float = Field(default=0.0, ge=0, le=3600,
                         description="Seconds off in each cycle; 0 sounds continuously")
    max_s: float = Field(default=600.0, gt=0, le=86400,
                         description="Longest it sounds for one alarm")
    check_interval_s: float = Field(default=300.0, ge=5, le=86400,
                                    description="How often the relay is asked to hold its "
                                    "state while nothing changes (a relay that does not "
                                    "answer is an alarm of its own)")


class AckButtonConfig(StrictModel):
    """A push button at the reservoir, wired to a digital input of a Modbus module."""

    point: PointRef = Field(description="A discrete input point, e.g. keeper-box/ack")
    by: str = Field(default="", max_length=40,
                    description="Who the acknowledgement names (default: the point)")


class NotifyConfig(StrictModel):
    """SMS through the site's 4G modem, sirens by relay, escalation until acknowledged."""

    modem: ModemConfig | None = None
    language: Literal["zh", "en"] = "zh"
    contacts: list[ContactConfig] = Field(default_factory=list)
    escalation: list[TierConfig] = Field(default_factory=list)
    sirens: list[SirenConfig] = Field(default_factory=list)
    ack_button: AckButtonConfig | None = None
    # The point in words, as texts name it: {"level-1/water_level": "库水位"}. Points not
    # named here are named by their quantity (库水位, 渗压, ...).
    point_names: dict[PointRef, str] = Field(default_factory=dict)
    pace_s: Duration = Field(default=60.0, description="At most one text per recipient in "
                             "this time; what comes meanwhile goes as one summary")
    retry_s: Duration = Field(default=15.0, description="First wait before a failed text "
                              "is tried again (doubling up to retry_max_s)")
    retry_max_s: Duration = 300.0
    max_tries: int = Field(default=8, ge=1, le=100)
    all_clear: bool = Field(default=True, description="Text whoever was told when the "
                            "alarm clears")
    relay_alarm_severity: SeverityName = "alarm"


# --- checks against the rest of the site ---------------------------------------------------

def check(settings: GatewaySettings, report: Report) -> None:
    """Everything the section refers to exists and fits; paths are relative to
    ``notify``."""
    config = settings.notify
    if config is None:
        return
    _check_contacts(config, report)
    _check_sirens(config, settings, report)
    _check_points(config, settings, report)
    if config.modem is not None:
        for b_index, bus in enumerate(settings.buses):
            if getattr(bus, "port", None) == config.modem.port:
                report(("modem", "port"), f"{config.modem.port} is also the port of bus "
                                          f"{bus.id!r} (buses[{b_index}])")


def _duplicates(ids: Sequence[str], what: str, section: str, report: Report,
                key: str = "id") -> None:
    seen: dict[str, int] = {}
    for index, item in enumerate(ids):
        if item in seen:
            report((section, index, key), f"duplicate {what} {item!r} (also {section}"
                                          f"[{seen[item]}])")
        else:
            seen[item] = index


def _check_contacts(config: NotifyConfig, report: Report) -> None:
    _duplicates([c.id for c in config.contacts], "contact id", "contacts", report)
    # A reply is matched to a person by number: two contacts on one number are ambiguous.
    _duplicates([c.phone for c in config.contacts], "phone number", "contacts", report,
                "phone")
    known = [c.id for c in config.contacts]
    if (config.contacts or config.escalation) and config.modem is None:
        report(("modem",), "contacts and an escalation ladder need the SMS modem "
                           "(notify.modem: {port: ...})")
    previous = 0.0
    for t_index, tier in enumerate(config.escalation):
        for c_index, contact in enumerate(tier.contacts):
            if contact not in known:
                report(("escalation", t_index, "contacts", c_index),
                       f"unknown contact {contact!r} (contacts: {', '.join(known) or 'none'})")
        if tier.after_min < previous:
            report(("escalation", t_index, "after_min"),
                   f"after_min {tier.after_min:g} is before the tier above it "
                   f"({previous:g}): list the ladder in order")
        previous = max(previous, tier.after_min)


def _check_sirens(config: NotifyConfig, settings: GatewaySettings, report: Report) -> None:
    _duplicates([s.id for s in config.sirens], "siren id", "sirens", report)
    buses = {b.id: b for b in settings.buses}
    devices = {d.id for d in settings.devices}
    relays: dict[tuple[str, int, int], int] = {}
    for index, siren in enumerate(config.sirens):
        here: PathKey = ("sirens", index)
        bus = buses.get(siren.bus)
        if bus is None:
            report((*here, "bus"), f"siren {siren.id!r} refers to bus {siren.bus!r}, which "
                                   f"is not defined (buses: {', '.join(buses) or 'none'})")
        elif bus.type not in MODBUS_BUS_TYPES:
            report((*here, "bus"), f"siren {siren.id!r} is on {bus.type} bus {bus.id!r}; "
                                   "relay modules need a Modbus bus (modbus_rtu or modbus_tcp)")
        sensors = [d.id for d in settings.devices if d.bus == siren.bus and d.unit == siren.unit]
        if sensors:
            report((*here, "unit"), f"unit {siren.unit} on bus {siren.bus!r} is also device "
                                    f"{sensors[0]!r}: a relay module needs an address of "
                                    "its own")
        if siren.id in devices:
            report((*here, "id"), f"siren id {siren.id!r} is also a device id; its relay "
                                  "alarms would be taken for that device's")
        place = (siren.bus, siren.unit, siren.coil)
        if place in relays:
            report((*here, "coil"), f"coil {siren.coil} of unit {siren.unit} on bus "
                                    f"{siren.bus!r} is also sirens[{relays[place]}]")
        relays.setdefault(place, index)


def _check_points(config: NotifyConfig, settings: GatewaySettings, report: Report) -> None:
    points = {f"{d.id}/{p.id}": p for d, p in settings.iter_points()}
    derived = {d.key for d in settings.derived}
    for ref in config.point_names:
        if ref not in points and ref not in derived:
            report(("point_names", ref), f"unknown point {ref!r}")
    button = config.ack_button
    if button is None:
        return
    point = points.get(button.point)
    if point is None:
        report(("ack_button", "point"), f"unknown point {button.point!r}: the button is a "
                                        "point of a Modbus device (a discrete input)")
    elif point.register is None or point.register.table not in ("discrete", "coil"):
        report(("ack_button", "point"), f"point {button.point!r} is not a digital input: "
                                        "use a register with table: discrete")
