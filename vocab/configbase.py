"""Base for every configuration model: unknown keys are errors, values are immutable.

A typo in a site's YAML (``poll_intervall_s``) must fail ``edge check`` rather than be
silently ignored, so every model forbids extra keys.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """A configuration model that rejects unknown keys and cannot be mutated."""

    model_config = ConfigDict(extra="forbid", frozen=True)
