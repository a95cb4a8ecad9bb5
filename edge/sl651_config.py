"""The ``sl651`` section: the centres this station reports to in SL 651-2014, and what.

Provincial, city and county hydrological centres take the reservoir's level and rainfall
in the frames of SL 651-2014 over TCP (docs/sl651.md). This module holds the section's
models and the checks that need the rest of the site (the points each element reports,
the digits each element has room for). It is imported with every configuration, so it
stays light: the channel and its connections load only when the section is there
(edge/channels/sl651.py).
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator, model_validator

from vocab.checking import Report
from vocab.configbase import StrictModel
from vocab.ids import PointRef

if TYPE_CHECKING:
    from edge.channels.sl651_elements import ElementDef
    from edge.config import GatewaySettings

MAX_CENTRES = 4  # §6.1: a station reports to at most four centres
_STATION = re.compile(r"^[0-9A-Fa-f]{10}$")
_USER_DEFINED = re.compile(r"^FF[0-9A-Fa-f]{2}$")
CategoryLetter = Literal["P", "H", "K", "Z", "D", "T", "M", "G", "Q", "I", "O"]


class CentreConfig(StrictModel):
    """One centre (中心站): its address in the frames and where it listens."""

    address: int = Field(ge=1, le=255, description="The centre address of table 12 (1-255)")
    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    confirm: bool = Field(default=True, description="Confirmed mode (M2): a report stays "
                          "queued for this centre until its confirmation arrives")


class ElementMapConfig(StrictModel):
    """A point reported as an element, by mnemonic (ZU, PJ, ...) or user-defined FFxx."""

    point: PointRef
    element: str = Field(description="A table C.1 mnemonic such as ZU, P1, PD, PT, VT, or a "
                         "user-defined identifier FF00-FFFE (then give digits and decimals)")
    decimals: int | None = Field(default=None, ge=0, le=7, description="One of the "
                                 "element's allowed decimal counts (ZU: 3 or 2)")
    digits: int | None = Field(default=None, ge=1, le=20,
                               description="Digits of a user-defined element, N(x,y)'s x")
    scale: float = Field(default=1.0, description="Multiplies the point's value into the "
                         "element's unit (e.g. 0.001 for a point in mm sent as m)")

    @model_validator(mode="after")
    def _known_element(self) -> ElementMapConfig:
        self.definition()  # raises ValueError naming the element
        return self

    def definition(self) -> ElementDef:
        # The codec and table C.1 load only with a site that has an sl651 section.
        from edge.channels.sl651_codec import EncodeError
        from edge.channels.sl651_elements import ElementDef, element

        if _USER_DEFINED.match(self.element):
            if self.digits is None:
                raise ValueError(f"user-defined element {self.element} needs digits "
                                 "(and decimals): the centre knows it only by agreement")
            try:
                return ElementDef.user_defined(int(self.element, 16), self.element.upper(),
                                               self.digits, self.decimals or 0)
            except EncodeError as exc:
                raise ValueError(str(exc)) from exc
        try:
            found = element(self.element)
        except KeyError:
            raise ValueError(f"SL 651 has no element {self.element!r} in table C.1 (ZU, ZB, "
                             "Z, P1, PD, PJ, PT, VT, ...); a user-defined one is FF00-FFFE "
                             "with its digits and decimals") from None
        if found.kind != "number":
            raise ValueError(f"{found.label} is not a single value; the hourly report sends "
                             "the 5-minute series itself")
        if self.decimals is not None and self.decimals not in (found.decimals,
                                                                *found.alt_decimals):
            allowed = ", ".join(str(d) for d in (found.decimals, *found.alt_decimals))
            raise ValueError(f"{found.label} is sent with {allowed} decimals, "
                             f"not {self.decimals}")
        return found


class AddedConfig(StrictModel):
    """Added reports (33H) beside each alarm transition: while it rains or the level
    moves, every ``interval_min`` (reservoir.md §5: 5 min, 1 mm, 1 cm)."""

    interval_min: float = Field(default=5.0, gt=0, le=60)
    rain_mm: float = Field(default=1.0, gt=0)
    level_change_m: float = Field(default=0.01, gt=0)


class Sl651Config(StrictModel):
    """This station's identity in SL 651 and the centres it reports to."""

    station_address: str = Field(description="10 digits: BCD for a hydrological station "
                                 "(table 13), county code + custom hex part otherwise")
    category: CategoryLetter = Field(default="K", description="Annex A: K reservoir")
    password_env: str | None = Field(default=None, description="Environment variable "
                                     "holding the 4 hex-digit password; 0000 when absent")
    keepalive_s: float = Field(default=60.0, ge=1, le=3600)
    timed_report_min: float = Field(default=60.0, gt=0, le=1440)
    hourly: bool = Field(default=True, description="Send the 34H hourly report with the "
                         "twelve 5-minute rainfalls (from PT or PD) and levels")
    level_base_m: float | None = Field(default=None, description="The level base the "
                                       "hourly report's 5-minute relative levels (DRZ1) "
                                       "are counted from; without it they are left out")
    added: AddedConfig = Field(default_factory=AddedConfig)
    confirm_timeout_s: float = Field(default=10.0, gt=0, le=600, description="Without a "
                                     "confirmation in this time the report is sent again")
    max_resends: int = Field(default=3, ge=0, le=100, description="Sends of one report "
                             "before it is set aside for that centre (counted, kept)")
    retry_max_s: float = Field(default=60.0, ge=0.1, le=3600,
                               description="Longest wait between connection attempts")
    pace_s: float = Field(default=0.2, ge=0, le=60, description="Gap between backlog "
                          "reports once a centre is back")
    centres: list[CentreConfig] = Field(min_length=1, max_length=MAX_CENTRES)
    elements: list[ElementMapConfig] = Field(min_length=1)

    @field_validator("station_address")
    @classmethod
    def _station(cls, value: str) -> str:
        if not _STATION.match(value):
            raise ValueError(f"{value!r} is not a station address: 10 digits (5 bytes)")
        return value.upper()

    @property
    def category_code(self) -> int:
        from edge.channels.sl651_codec import Category

        return int(Category[_CATEGORY_NAMES[self.category]])

    def password(self) -> int:
        """The password from ``password_env``; 0000 when absent (§6.2.3.3)."""
        text = os.environ.get(self.password_env, "") if self.password_env else ""
        return int(text, 16) if re.fullmatch(r"[0-9A-Fa-f]{4}", text) else 0

    def channel_names(self) -> list[str]:
        return [f"sl651-centre-{c.address}" for c in self.centres]


_CATEGORY_NAMES: dict[str, str] = {
    "P": "RAINFALL", "H": "RIVER", "K": "RESERVOIR", "Z": "SLUICE", "D": "PUMPING",
    "T": "TIDE", "M": "SOIL_MOISTURE", "G": "GROUNDWATER", "Q": "WATER_QUALITY",
    "I": "INTAKE", "O": "OUTFALL"}


# --- checks against the rest of the site ---------------------------------------------------

def check(settings: GatewaySettings, report: Report) -> None:
    """Points exist, centres and elements are not given twice, values fit their digits;
    paths are relative to ``sl651``."""
    config = settings.sl651
    if config is None:
        return
    seen: dict[int, int] = {}
    for index, centre in enumerate(config.centres):
        if centre.address in seen:
            report(("centres", index, "address"), f"centre address {centre.address} is "
                   f"also centres[{seen[centre.address]}]: each centre needs its own")
        seen.setdefault(centre.address, index)
    if config.password_env and os.environ.get(config.password_env) and not re.fullmatch(
            r"[0-9A-Fa-f]{4}", os.environ[config.password_env]):
        report(("password_env",), f"${config.password_env} is not 4 hex digits")
    points: dict[str, object] = {f"{d.id}/{p.id}": p for d, p in settings.iter_points()}
    points.update({f"{d.device}/{d.id}": d for d in settings.derived})
    # What rules publish (rainfall sums rain/rain_1h, rain/rain_day, ...) is reported too.
    points.update({key: None for rule in settings.rules for key in rule.outputs()})
    elements: dict[str, int] = {}
    for index, item in enumerate(config.elements):
        _check_element(item, index, points, elements, report)


def _check_element(item: ElementMapConfig, index: int, points: dict[str, object],
                   elements: dict[str, int], report: Report) -> None:
    definition = item.definition()
    if definition.mnemonic in elements:
        report(("elements", index, "element"), f"{definition.label} is also "
               f"elements[{elements[definition.mnemonic]}]: one point per element")
    elements.setdefault(definition.mnemonic, index)
    if item.point not in points:
        known = ", ".join(sorted(points)[:8]) or "none"
        report(("elements", index, "point"), f"point {item.point!r} is not defined "
               f"(points: {known})")
        return
    point = points[item.point]
    value_range = getattr(point, "range", None)
    if value_range:
        decimals = definition.decimals if item.decimals is None else item.decimals
        digits = definition.digits - (definition.decimals - decimals)
        limit = (10 ** digits - 1) / 10 ** decimals
        worst = max(abs(value_range[0] * item.scale), abs(value_range[1] * item.scale))
        if worst > limit:
            report(("elements", index, "element"), f"{item.point} may read up to "
                   f"{worst:g} (its range), more than {definition.label} holds in "
                   f"N({digits},{decimals}): {limit:.{decimals}f}")
