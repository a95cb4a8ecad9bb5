"""Decoding a whole read block at once, with everything that depends only on the
configuration worked out when the block is planned.

``decode_point`` (drivers/decode.py) looks up a point's table, type, orders, scale and
range on its pydantic model for every reading, joins the words into bytes one value at
a time and picks the struct format by name: about 4 µs a float32 point, which with many
small devices (issue #19: 200 devices × 10 points a second) is the largest part of a
poll's cost on the field side. A ``BlockDecoder`` packs the block's words into bytes once
and unpacks each point with a precompiled ``struct.Struct`` at its byte offset. Same
readings as ``decode_point``, which it falls back to for what it does not precompile
(bits, coils, little-endian word or byte orders) and for words that are not 16-bit
values (so decode errors read the same).
"""

from __future__ import annotations

import array
import math
import struct
import sys
from collections.abc import Sequence

from drivers.decode import decode_point
from drivers.devices import PointConfig
from drivers.readplan import ReadBlock
from drivers.registers import shortest_float32
from vocab.model import Reading

# Big-endian struct format of each register type, as drivers/registers.py packs it.
_FORMATS = {"int16": ">h", "uint16": ">H", "int32": ">i", "uint32": ">I", "int64": ">q",
            "float32": ">f", "float64": ">d"}
# One unpacker per type for every point: a Struct and its bound method per point were
# ~240 B each, 0.47 MiB of a site of 200 devices x 10 points (bench/memory_trace.py).
_UNPACK_FROM = {name: struct.Struct(fmt).unpack_from for name, fmt in _FORMATS.items()}


class _Step:
    """How one point is read off the block's bytes and turned into a reading."""

    __slots__ = (
        "at",
        "float32",
        "high",
        "low",
        "offset",
        "point",
        "point_id",
        "scale",
        "unit",
        "unpack_from",
    )

    def __init__(self, point: PointConfig, at: int) -> None:
        reg = point.register
        assert reg is not None, "plan_reads only takes points with a register"
        self.point = point
        self.point_id = point.id
        self.unit = point.unit
        self.unpack_from = _UNPACK_FROM[reg.value_type]
        self.at = at
        self.float32 = reg.value_type == "float32"
        self.scale = point.scale
        self.offset = point.offset
        # The range is in the engineering unit: a calibrated or counted point's range is
        # checked on the converted value (DeviceConversions), as scaled_reading does.
        converted = point.calibration is not None or point.tipping_bucket is not None
        checked = point.range is not None and not converted
        self.low = point.range[0] if checked and point.range else _NO_LOW
        self.high = point.range[1] if checked and point.range else math.inf


_NO_LOW = -math.inf  # one object: ``-math.inf`` makes a new float at every evaluation


# Alike devices share their steps: twenty piezometers of one make answer the same points
# at the same offsets, and their point models are one object (share_repeats,
# vocab/configbase.py). A step a point was 0.2 MiB at 200 devices × 10 points. Keyed by
# identity, not equality: share_repeats already decided which points are the same one
# (it keeps an offset of 0.0 apart from -0.0, which compare equal). A step holds its
# point, so an id cannot be reused while its step is kept; reloads add new points, and
# the table is emptied when it grows past any one site's size.
_STEPS: dict[tuple[int, int], _Step] = {}
_MAX_STEPS = 8192


def _step(point: PointConfig, at: int) -> _Step:
    key = (id(point), at)
    step = _STEPS.get(key)
    if step is None:
        if len(_STEPS) >= _MAX_STEPS:
            _STEPS.clear()
        step = _STEPS[key] = _Step(point, at)
    return step


def _offset(point: PointConfig, block: ReadBlock) -> int:
    """Where the point's value starts in the block's bytes."""
    reg = point.register
    assert reg is not None, "plan_reads only takes points with a register"
    return 2 * (reg.address - block.address)


def _precompiled(point: PointConfig) -> bool:
    reg = point.register
    return (reg is not None and reg.table in ("holding", "input") and reg.bit is None
            and reg.word_order == "big" and reg.byte_order == "big")


# A block's words as big-endian bytes through an array, not ``Struct(">20H").pack(*words)``:
# a call with ``*words`` makes a tuple of the words, and CPython 3.11 puts a freed tuple of
# exactly 20 items on a free list it never takes one back from (its pop stops at 19). A
# device of ten float32 points is 20 registers, so every poll of one left a tuple there,
# up to 2,000 of them (368 KB) between full collections: 0.3 MiB of the gateway's RSS at
# 200 such devices (bench/memory_trace.py, docs/performance.md).
_WORD = "H"
assert array.array(_WORD).itemsize == 2, "an unsigned short is a 16-bit Modbus word"
_SWAP = sys.byteorder == "little"


def _block_bytes(values: Sequence[int | bool]) -> bytes:
    """The words as the device sent them; OverflowError or TypeError for a value that is
    not a 16-bit word."""
    words = array.array(_WORD, values)
    if _SWAP:
        words.byteswap()
    return words.tobytes()


class BlockDecoder:
    """The readings of one block's points from the words of its reply."""

    def __init__(self, block: ReadBlock) -> None:
        self.block = block
        self.fast = all(_precompiled(p) for p in block.points)
        self.steps = [_step(p, _offset(p, block)) for p in block.points] if self.fast else []

    def decode(self, device: str, values: Sequence[int | bool], ts_ms: int) -> list[Reading]:
        block = self.block
        if not self.fast or len(values) != block.count:
            return [decode_point(device, p, block, values, ts_ms) for p in block.points]
        try:
            data = _block_bytes(values)
        except (OverflowError, TypeError):
            # A word that is not a 16-bit value: decode_point names it in the reason.
            return [decode_point(device, p, block, values, ts_ms) for p in block.points]
        readings = []
        isfinite = math.isfinite
        for step in self.steps:
            raw = float(step.unpack_from(data, step.at)[0])
            if not isfinite(raw):
                readings.append(Reading(device, step.point_id, ts_ms, None, step.unit, "bad",
                                        raw, "not_a_number"))
                continue
            if step.float32:
                raw = shortest_float32(raw)
            # Rounded to 9 decimals as scaled_reading does (binary noise of the scaling).
            value = round(raw * step.scale + step.offset, 9)
            if step.low <= value <= step.high:
                readings.append(Reading(device, step.point_id, ts_ms, value, step.unit,
                                        "good", raw))
            else:
                readings.append(Reading(device, step.point_id, ts_ms, value, step.unit,
                                        "bad", raw, "out_of_range"))
        return readings
