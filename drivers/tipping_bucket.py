"""Rainfall from a tipping-bucket rain gauge's pulse counter (domain reference §1, §1.1, §2.3).

A φ200 mm tipping bucket (GB/T 21978.2 / GB/T 11832) closes a reed switch once per 0.1, 0.2 or
0.5 mm of rain; an RTU or pulse-input module counts the closures into a 16- or 32-bit register
that the gateway polls. The register wraps at 2^bits and goes back to 0 when the module is
power-cycled, so rain is the increment between polls taken modulo 2^bits, checked against the
most a bucket can physically tip in that time (4 mm/min, the top of the gauge's intensity
range). An increment above that ceiling cannot be rain; it is a reset, and the new count is
then the tips since the reset. The counter is read with the reed switch already debounced by
the counting module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from pydantic import Field, field_validator

from vocab.configbase import StrictModel

BUCKET_SIZES_MM = (0.1, 0.2, 0.5)
"""Rain per tip of the standard bucket sizes (§1)."""

MAX_GAUGE_INTENSITY_MM_PER_MIN = 4.0
"""Upper end of a tipping bucket's measuring range (§1): more than this cannot be counted."""


class TippingBucketCounter(StrictModel):
    """Configuration of one tipping-bucket pulse counter."""

    mm_per_tip: float
    counter_bits: Literal[16, 32] = 16
    max_intensity_mm_per_min: float = Field(
        default=MAX_GAUGE_INTENSITY_MM_PER_MIN, gt=0.0, allow_inf_nan=False
    )

    @field_validator("mm_per_tip")
    @classmethod
    def _standard_bucket(cls, value: float) -> float:
        if value not in BUCKET_SIZES_MM:
            sizes = ", ".join(str(size) for size in BUCKET_SIZES_MM)
            raise ValueError(f"mm_per_tip must be one of {sizes} (standard buckets), got {value}")
        return value

    def ceiling_tips(self, elapsed_s: float) -> int:
        """Most tips physically possible in ``elapsed_s`` seconds at the maximum intensity.

        Rounded up and at least 1, so a single tip in a short interval is never taken for a reset.
        """
        tips = self.max_intensity_mm_per_min * (elapsed_s / 60.0) / self.mm_per_tip
        # 3 mm/min over 12 s at 0.1 mm is 6.000000000000001 tips in binary floating point;
        # without rounding first, ceil would allow one tip too many.
        return max(1, math.ceil(round(tips, 9)))


@dataclass(frozen=True)
class RainIncrement:
    """Rain counted between two polls, stamped by the caller at the end of the interval (§2.3).

    Flags: "counter_reset" when the count went back (tips since the reset are reported),
    "implausible" when even the new count exceeds the ceiling (0 reported), and
    "clock_not_monotonic" when the poll time did not advance (0 reported).
    """

    mm: float
    tips: int
    interval_s: float
    flags: tuple[str, ...]


class RainCounterTracker:
    """Turns successive counter readings of one gauge into rain increments.

    The first reading only sets the baseline. Every later reading becomes the next baseline,
    whatever its verdict, so one bad interval never poisons the following ones.
    """

    def __init__(self, counter: TippingBucketCounter) -> None:
        self.counter = counter
        self._modulus = 1 << counter.counter_bits
        self._last_count: int | None = None
        self._last_ts_ms: int | None = None

    def update(self, count: int, ts_ms: int) -> RainIncrement | None:
        """Rain since the previous reading, or None for the first reading.

        ``count`` is the raw register value; ``ts_ms`` the acquisition time in epoch ms.
        Raises ValueError for a count that does not fit the configured counter width.
        """
        if not 0 <= count < self._modulus:
            raise ValueError(
                f"count {count} out of range for a {self.counter.counter_bits}-bit counter"
            )
        last_count, last_ts_ms = self._last_count, self._last_ts_ms
        self._last_count, self._last_ts_ms = count, ts_ms
        if last_count is None or last_ts_ms is None:
            return None

        interval_s = (ts_ms - last_ts_ms) / 1000.0
        if interval_s <= 0:
            # Without elapsed time there is no ceiling to test the increment against; reporting
            # it could invent a storm out of a reset, so report none.
            return self._increment(0, interval_s, ("clock_not_monotonic",))

        ceiling = self.counter.ceiling_tips(interval_s)
        tips = (count - last_count) % self._modulus
        if tips <= ceiling:
            return self._increment(tips, interval_s, ())
        # Tips between the last poll and the reset are lost; the module cannot tell us them.
        if count <= ceiling:
            return self._increment(count, interval_s, ("counter_reset",))
        return self._increment(0, interval_s, ("counter_reset", "implausible"))

    def _increment(self, tips: int, interval_s: float, flags: tuple[str, ...]) -> RainIncrement:
        # mm_per_tip has one decimal, so rounding removes only binary floating-point noise
        # (3 × 0.1 = 0.30000000000000004) that would otherwise creep into window sums.
        mm = round(tips * self.counter.mm_per_tip, 6)
        return RainIncrement(mm=mm, tips=tips, interval_s=interval_s, flags=flags)
