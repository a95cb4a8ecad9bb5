"""Register decoding for every type and order, against values packed with struct."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from drivers.registers import (
    RegisterDecodeError,
    decode_registers,
    encode_value,
    extract_bit,
    shortest_float32,
)

CASES = [
    ("int16", "h", -12345),
    ("uint16", "H", 54321),
    ("int32", "i", -123456789),
    ("uint32", "I", 3_000_000_000),
    ("int64", "q", -9_000_000_000_123),
    ("float32", "f", 30.28),
    ("float64", "d", 123.456789012345),
]


def wire_words(fmt: str, value: float, word_order: str, byte_order: str) -> list[int]:
    """Independent packing: big-endian bytes, then the device's swaps."""
    raw = struct.pack(">" + fmt, value)
    pairs = [raw[i : i + 2] for i in range(0, len(raw), 2)]
    if byte_order == "little":
        pairs = [p[::-1] for p in pairs]
    if word_order == "little":
        pairs = pairs[::-1]
    return [int.from_bytes(p, "big") for p in pairs]


@pytest.mark.parametrize(("register_type", "fmt", "value"), CASES)
@pytest.mark.parametrize("word_order", ["big", "little"])
@pytest.mark.parametrize("byte_order", ["big", "little"])
def test_decode_every_type_and_order(register_type: str, fmt: str, value: float,
                                     word_order: str, byte_order: str) -> None:
    words = wire_words(fmt, value, word_order, byte_order)
    decoded = decode_registers(words, register_type, word_order, byte_order)  # type: ignore[arg-type]
    expected = struct.unpack(">" + fmt, struct.pack(">" + fmt, value))[0]
    assert decoded == expected
    assert encode_value(value, register_type, word_order, byte_order) == words  # type: ignore[arg-type]


def test_reference_float_orders() -> None:
    # Domain reference §1.1: 30.28 = 0x41F23D71 → ABCD [0x41F2, 0x3D71], CDAB swapped.
    assert decode_registers([0x41F2, 0x3D71], "float32") == pytest.approx(30.28, abs=1e-6)
    assert decode_registers([0x3D71, 0x41F2], "float32", "little") == pytest.approx(30.28,
                                                                                    abs=1e-6)
    # BADC: bytes swapped within each word.
    assert decode_registers([0xF241, 0x713D], "float32", "big", "little") == pytest.approx(
        30.28, abs=1e-6)
    # DCBA: fully reversed.
    assert decode_registers([0x713D, 0xF241], "float32", "little", "little") == pytest.approx(
        30.28, abs=1e-6)


def test_wrong_word_count_is_a_clear_error() -> None:
    with pytest.raises(RegisterDecodeError, match="float32 needs 2 registers, got 1"):
        decode_registers([0x41F2], "float32")


def test_word_out_of_range_is_rejected() -> None:
    with pytest.raises(RegisterDecodeError, match="out of range"):
        decode_registers([70000], "uint16")


def test_extract_bit() -> None:
    assert extract_bit(0b1000_0000_0000_0100, 2) is True
    assert extract_bit(0b1000_0000_0000_0100, 15) is True
    assert extract_bit(0b1000_0000_0000_0100, 0) is False


# The float32 printing: the shortest decimal, found in two tries.

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
