"""Durations as a site's YAML writes them: seconds, or ``90s``, ``30min``, ``3h``, ``7d``."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BeforeValidator

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
