"""Configuration building blocks shared by the rule types: ids, durations, limits, delays.

The rule models live in ``rules/`` beside the rules they configure, and ``edge.config``
imports them; so nothing here may import ``edge.config`` (it would be a circular import).
``Ident`` and ``PointRef`` therefore repeat the id patterns of ``edge.config``: ids become
MQTT topic levels and store keys, so both modules must accept exactly the same set.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, ValidationInfo, field_validator, model_validator

from edge.configbase import StrictModel

Ident = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
PointRef = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}/[A-Za-z0-9_-]{1,64}$")]
SeverityName = Literal["warning", "alarm", "critical"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|min|h|d)?\s*$")
_UNIT_S = {"s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
DURATION_HELP = "use seconds or a number with s, min, h or d (e.g. 90s, 30min, 3h, 7d)"


def parse_duration(value: Any) -> float:
    """Seconds from a number of seconds or a text such as ``30min``, ``3h``, ``7d``."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration: {DURATION_HELP}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNIT_S[match.group(2) or "s"]
    else:
        raise ValueError(f"{value!r} is not a duration: {DURATION_HELP}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"a duration must be positive, got {value!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest exact text for a duration: 3600 → ``1h``, 1800 → ``30min``."""
    for unit in ("d", "h", "min"):
        count = seconds / _UNIT_S[unit]
        if count >= 1 and count == int(count) and not (unit == "d" and count < 2):
            return f"{int(count)}{unit}"
    return f"{seconds:g}s"


# The schema must admit the text form ("1h") that the validator accepts.
Duration = Annotated[float, BeforeValidator(parse_duration, json_schema_input_type=float | str)]
"""Seconds; written in YAML as a number of seconds or as ``90s``, ``30min``, ``3h``, ``7d``."""


class Limit(StrictModel):
    severity: SeverityName
    # A number, or the name of a site level (site.levels), e.g. flood_limit.
    value: float | Ident


class Delay(StrictModel):
    """How long a new alarm level must persist before it is taken: samples or a duration.

    Counting samples suits a steady poll; a duration stays right when the poll interval
    is changed later.
    """

    samples: int | None = Field(default=None, ge=1, le=10_000)
    duration: Duration | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Delay:
        if (self.samples is None) == (self.duration is None):
            raise ValueError("a delay is either 'samples: N' or 'duration: D', exactly one")
        return self


def unique_severities(limits: list[Limit], side: str) -> list[Limit]:
    """Reject two limits of one severity on one side: the ladder would be ambiguous."""
    seen: set[str] = set()
    for limit in limits:
        if limit.severity in seen:
            raise ValueError(f"two '{limit.severity}' limits in '{side}': one per severity")
        seen.add(limit.severity)
    return limits


class LimitsConfig(StrictModel):
    """High and low limits by severity, with hysteresis and optional delays: the shape
    threshold and rate rules share."""

    high: list[Limit] = Field(default_factory=list)
    low: list[Limit] = Field(default_factory=list)
    hysteresis: float = Field(default=0.0, ge=0)
    on_delay: Delay | None = None
    off_delay: Delay | None = None

    @field_validator("high", "low")
    @classmethod
    def _one_per_severity(cls, limits: list[Limit], info: ValidationInfo) -> list[Limit]:
        return unique_severities(limits, info.field_name or "")

    @model_validator(mode="after")
    def _has_limits(self) -> LimitsConfig:
        if not self.high and not self.low:
            kind = getattr(self, "type", "this")
            raise ValueError(f"a {kind} rule needs at least one 'high' or 'low' limit")
        return self
