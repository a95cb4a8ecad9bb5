"""SL 651 reports as they wait in the outbox, and the frames made from them for a centre.

A report is committed once, as a message of kind ``sl651`` holding what was observed (the
function code, the observation time, each element's value or None); every centre's
channel takes it from the outbox and makes its own frame (its centre address, its own
serial number) when it sends it. So the values are those of the moment of the report,
however late a centre that was away receives it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from edge.channels.sl651_codec import EncodeError, Function
from edge.channels.sl651_elements import ElementDef, element
from edge.channels.sl651_reports import hourly_frame, report_frame
from edge.channels.sl651_values import Element, encode_element
from edge.sl651_config import ElementMapConfig, Sl651Config

KIND = "sl651"


@dataclass(frozen=True, slots=True)
class ReportValue:
    """One element's value in a report; None is sent as missing (F-filled)."""

    key: str  # the mnemonic, or FFxx for a user-defined element
    value: float | None
    decimals: int | None = None
    digits: int | None = None

    def as_element(self) -> Element:
        definition = _definition(self.key, self.digits, self.decimals)
        return Element(definition, self.value, self.decimals if self.digits is None else None)


@dataclass(frozen=True, slots=True)
class StoredReport:
    """What the outbox holds for one SL 651 report."""

    function: int
    observed_ms: int
    values: tuple[ReportValue, ...]
    rain5: tuple[float | None, ...] | None = None
    level5: tuple[float | None, ...] | None = None
    first_observed_ms: int | None = None

    def payload(self, seq: int) -> str:
        body: dict[str, Any] = {
            "seq": seq, "function": self.function, "observed": self.observed_ms,
            "values": [[v.key, v.value, v.decimals, v.digits] for v in self.values]}
        if self.function == Function.HOURLY:
            body.update(rain5=self.rain5, level5=self.level5, first=self.first_observed_ms)
        return json.dumps(body, separators=(",", ":"))

    @classmethod
    def from_payload(cls, payload: str) -> StoredReport:
        body = json.loads(payload)
        values = tuple(ReportValue(k, v, d, n) for k, v, d, n in body["values"])
        rain5, level5 = body.get("rain5"), body.get("level5")
        return cls(int(body["function"]), int(body["observed"]), values,
                   tuple(rain5) if rain5 is not None else None,
                   tuple(level5) if level5 is not None else None, body.get("first"))


def _definition(key: str, digits: int | None, decimals: int | None) -> ElementDef:
    if digits is not None:
        return ElementDef.user_defined(int(key, 16), key, digits, decimals or 0)
    return element(key)


def report_value(item: ElementMapConfig, value: float | None) -> ReportValue:
    """The element's value of a point's reading, or None (missing) when it cannot be sent.

    A value that does not fit the element's digits goes as missing, never truncated:
    ``edge check`` warns of a point whose range cannot fit.
    """
    definition = item.definition()
    user_digits = item.digits if definition.identifier > 0xFF else None
    stored = ReportValue(definition.mnemonic, None, item.decimals, user_digits)
    if value is None:
        return stored
    scaled = value * item.scale
    candidate = ReportValue(stored.key, scaled, stored.decimals, stored.digits)
    try:
        item_ = candidate.as_element()
        encode_element(item_.definition, item_.value, item_.decimals)
    except EncodeError:
        return stored
    return candidate


def frame_for(report: StoredReport, config: Sl651Config, centre: int, serial: int,
              sent_ms: int, password: int) -> bytes:
    """The frame of ``report`` for one centre, with its serial number."""
    elements = [v.as_element() for v in report.values]
    common: dict[str, Any] = {"centre": centre, "station": config.station_address,
                              "password": password, "serial": serial, "sent": sent_ms,
                              "category": config.category_code}
    if report.function == Function.HOURLY:
        return hourly_frame(**common, first_observed=report.first_observed_ms
                            or report.observed_ms, rain5_mm=report.rain5,
                            levels5_m=report.level5, observed=report.observed_ms,
                            elements=elements)
    return report_frame(report.function, **common, observed=report.observed_ms,
                        elements=elements)
