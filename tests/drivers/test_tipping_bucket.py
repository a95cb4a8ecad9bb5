"""Tipping-bucket counter increments: wrap, reset, the physical ceiling (reference §1.1)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from drivers.tipping_bucket import RainCounterTracker, RainIncrement, TippingBucketCounter

FIVE_MIN_MS = 5 * 60 * 1000
T0 = 1_718_000_000_000  # an epoch-ms acquisition time


def tracker(mm_per_tip: float = 0.5, bits: int = 16) -> RainCounterTracker:
    return RainCounterTracker(TippingBucketCounter(mm_per_tip=mm_per_tip, counter_bits=bits))


# --- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0.1, 0.2, 0.5])
def test_standard_bucket_sizes_accepted(size: float) -> None:
    assert TippingBucketCounter(mm_per_tip=size).mm_per_tip == size


@pytest.mark.parametrize("size", [0.3, 1.0, 0.0, -0.5])
def test_non_standard_bucket_size_rejected(size: float) -> None:
    with pytest.raises(ValidationError, match=r"mm_per_tip must be one of 0\.1, 0\.2, 0\.5"):
        TippingBucketCounter(mm_per_tip=size)


def test_counter_width_must_be_16_or_32() -> None:
    with pytest.raises(ValidationError):
        TippingBucketCounter(mm_per_tip=0.5, counter_bits=24)  # type: ignore[arg-type]


def test_defaults() -> None:
    counter = TippingBucketCounter(mm_per_tip=0.2)
    assert counter.counter_bits == 16
    assert counter.max_intensity_mm_per_min == 4.0


@pytest.mark.parametrize("intensity", [0.0, -4.0])
def test_non_positive_intensity_rejected(intensity: float) -> None:
    with pytest.raises(ValidationError):
        TippingBucketCounter(mm_per_tip=0.5, max_intensity_mm_per_min=intensity)


def test_unknown_key_rejected() -> None:
    with pytest.raises(ValidationError):
        TippingBucketCounter.model_validate({"mm_per_tip": 0.5, "bits": 16})


# --- physical ceiling ------------------------------------------------------------------------


def test_ceiling_reference_example() -> None:
    # §1.1: 4 mm/min × 5 min ÷ 0.5 mm per tip = 40 tips.
    assert TippingBucketCounter(mm_per_tip=0.5).ceiling_tips(300.0) == 40


def test_ceiling_at_other_bucket_sizes() -> None:
    assert TippingBucketCounter(mm_per_tip=0.2).ceiling_tips(300.0) == 100
    assert TippingBucketCounter(mm_per_tip=0.1).ceiling_tips(300.0) == 200


def test_ceiling_not_inflated_by_float_rounding() -> None:
    counter = TippingBucketCounter(mm_per_tip=0.1, max_intensity_mm_per_min=3.0)
    # 3 mm/min × 0.2 min ÷ 0.1 mm = 6 tips, which binary floating point computes as
    # 6.000000000000001.
    assert 3.0 * (12.0 / 60.0) / 0.1 > 6.0
    assert counter.ceiling_tips(12.0) == 6


def test_ceiling_rounds_up_and_is_at_least_one() -> None:
    counter = TippingBucketCounter(mm_per_tip=0.5)
    # 4 mm/min for 10 s is 0.667 mm = 1.33 tips → 2.
    assert counter.ceiling_tips(10.0) == 2
    assert counter.ceiling_tips(0.001) == 1


# --- tracker ---------------------------------------------------------------------------------


def test_first_sample_has_no_baseline() -> None:
    assert tracker().update(1234, T0) is None


def test_ordinary_increment() -> None:
    rain = tracker()
    rain.update(100, T0)
    assert rain.update(110, T0 + FIVE_MIN_MS) == RainIncrement(5.0, 10, 300.0, ())


def test_no_rain() -> None:
    rain = tracker()
    rain.update(100, T0)
    assert rain.update(100, T0 + FIVE_MIN_MS) == RainIncrement(0.0, 0, 300.0, ())


def test_sixteen_bit_wrap() -> None:
    rain = tracker(bits=16)
    rain.update(65530, T0)
    # 65530 → 65535 is 5 tips, 65535 → 0 one more, 0 → 4 four more.
    assert rain.update(4, T0 + FIVE_MIN_MS) == RainIncrement(5.0, 10, 300.0, ())


def test_thirty_two_bit_wrap() -> None:
    rain = tracker(bits=32)
    rain.update(2**32 - 3, T0)
    assert rain.update(7, T0 + FIVE_MIN_MS) == RainIncrement(5.0, 10, 300.0, ())


def test_thirty_two_bit_counter_does_not_wrap_at_sixteen_bits() -> None:
    rain = tracker(bits=32)
    rain.update(65530, T0)
    assert rain.update(65540, T0 + FIVE_MIN_MS) == RainIncrement(5.0, 10, 300.0, ())


def test_reference_ceiling_is_accepted_in_full() -> None:
    rain = tracker(mm_per_tip=0.5)
    rain.update(1000, T0)
    assert rain.update(1040, T0 + FIVE_MIN_MS) == RainIncrement(20.0, 40, 300.0, ())


def test_one_tip_over_ceiling_is_a_reset() -> None:
    rain = tracker(mm_per_tip=0.5)
    rain.update(1000, T0)
    # 41 tips in 5 min is more than a bucket can count; 1041 since a reset is impossible too.
    assert rain.update(1041, T0 + FIVE_MIN_MS) == RainIncrement(
        0.0, 0, 300.0, ("counter_reset", "implausible")
    )


def test_device_reset_counts_tips_since_reset() -> None:
    rain = tracker(mm_per_tip=0.5)
    rain.update(30000, T0)
    assert rain.update(12, T0 + FIVE_MIN_MS) == RainIncrement(6.0, 12, 300.0, ("counter_reset",))


def test_reset_count_at_the_ceiling_is_still_plausible() -> None:
    rain = tracker(mm_per_tip=0.5)
    rain.update(30000, T0)
    assert rain.update(40, T0 + FIVE_MIN_MS) == RainIncrement(20.0, 40, 300.0, ("counter_reset",))


def test_reset_to_zero() -> None:
    rain = tracker(mm_per_tip=0.2)
    rain.update(5, T0)
    assert rain.update(0, T0 + FIVE_MIN_MS) == RainIncrement(0.0, 0, 300.0, ("counter_reset",))


def test_baseline_follows_after_reset() -> None:
    rain = tracker(mm_per_tip=0.5)
    rain.update(30000, T0)
    rain.update(12, T0 + FIVE_MIN_MS)
    assert rain.update(15, T0 + 2 * FIVE_MIN_MS) == RainIncrement(1.5, 3, 300.0, ())


def test_long_gap_raises_the_ceiling() -> None:
    rain = tracker(mm_per_tip=0.5)
    rain.update(0, T0)
    # After an hour offline, 200 tips (100 mm) is under the 480-tip ceiling.
    assert rain.update(200, T0 + 12 * FIVE_MIN_MS) == RainIncrement(100.0, 200, 3600.0, ())


def test_clock_jumped_back_reports_no_rain() -> None:
    rain = tracker()
    rain.update(100, T0)
    result = rain.update(130, T0 - 60_000)
    assert result == RainIncrement(0.0, 0, -60.0, ("clock_not_monotonic",))
    # The new reading is the next baseline, so the following interval is ordinary.
    assert rain.update(134, T0 - 60_000 + FIVE_MIN_MS) == RainIncrement(2.0, 4, 300.0, ())


def test_same_timestamp_reports_no_rain() -> None:
    rain = tracker()
    rain.update(100, T0)
    assert rain.update(101, T0) == RainIncrement(0.0, 0, 0.0, ("clock_not_monotonic",))


def test_mm_free_of_float_noise() -> None:
    rain = tracker(mm_per_tip=0.1)
    rain.update(0, T0)
    increment = rain.update(3, T0 + FIVE_MIN_MS)
    assert increment is not None
    assert increment.mm == 0.3


@pytest.mark.parametrize(("bits", "count"), [(16, -1), (16, 65536), (32, 2**32)])
def test_count_outside_counter_width_rejected(bits: int, count: int) -> None:
    rain = tracker(bits=bits)
    with pytest.raises(ValueError, match=f"{bits}-bit"):
        rain.update(count, T0)
