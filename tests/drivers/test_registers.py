"""The register codec's float32 printing: the shortest decimal, found in two tries."""

from __future__ import annotations

import math
import struct

from hypothesis import example, given
from hypothesis import strategies as st

from drivers.registers import shortest_float32


def widened(bits: int) -> float:
    """The float32 with these bits, as the double struct gives back."""
    return struct.unpack(">f", struct.pack(">I", bits))[0]


def shortest_by_trying_each(value: float) -> float:
    """The definition: the first of 6 to 9 significant digits that reads back the same."""
    target = struct.pack(">f", value)
    for digits in range(6, 10):
        candidate = float(f"{value:.{digits}g}")
        if struct.pack(">f", candidate) == target:
            return candidate
    raise AssertionError(f"{value!r} does not round-trip at 9 digits")


def test_a_device_value_prints_as_the_device_meant_it() -> None:
    assert widened(0x42F7BB30) == 123.8656005859375
    assert shortest_float32(widened(0x42F7BB30)) == 123.8656
    assert shortest_float32(struct.unpack(">f", struct.pack(">f", 0.1))[0]) == 0.1
    assert shortest_float32(widened(0x4B800001)) == 16777218.0


@given(st.integers(min_value=0, max_value=2**32 - 1))
@example(0x00000001)  # the smallest subnormal: 9 digits
@example(0x7F7FFFFF)  # the largest float32
@example(0x80000000)  # minus zero
@example(0x3DCCCCCD)  # 0.1: 1 digit, found at the sixth
@example(0x4B800001)  # 16777218: 8 digits
def test_two_tries_find_what_trying_each_digit_count_finds(bits: int) -> None:
    value = widened(bits)
    if not math.isfinite(value):
        return  # the decoder marks NaN and infinity bad before printing (blockdecode.py)
    found = shortest_float32(value)
    assert found == shortest_by_trying_each(value)
    assert struct.pack(">f", found) == struct.pack(">f", value)
    assert math.copysign(1.0, found) == math.copysign(1.0, value)
