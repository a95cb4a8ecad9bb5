"""Configuration building blocks shared by the rule types: limits and delays."""

from __future__ import annotations

from pydantic import Field, ValidationInfo, field_validator, model_validator

from vocab.configbase import StrictModel
from vocab.durations import Duration
from vocab.ids import Ident, SeverityName


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
