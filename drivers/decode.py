"""From the words of a read block to readings: decoding, scaling and range checks.

Bad sensor data never raises out of here: every failure becomes a reading with quality
``bad`` and the reason, so one broken point cannot stop the others of its device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy

from drivers.readplan import ReadBlock
from drivers.registers import RegisterDecodeError, decode_registers, extract_bit
from edge.config import PointConfig
from edge.model import Reading


def decode_point(device: str, point: PointConfig, block: ReadBlock,
                 values: Sequence[int | bool], ts_ms: int) -> Reading:
    reg = point.register
    offset = reg.address - block.address
    try:
        if reg.table in ("coil", "discrete"):
            raw: float = float(bool(values[offset]))
        elif reg.bit is not None:
            raw = float(extract_bit(int(values[offset]), reg.bit))
        else:
            words = [int(v) for v in values[offset : offset + reg.width]]
            raw = float(decode_registers(words, reg.value_type, reg.word_order, reg.byte_order))
    except (RegisterDecodeError, IndexError, ValueError) as exc:
        return Reading(device, point.id, ts_ms, None, point.unit, "bad", None,
                       f"decode_error: {exc}")
    if not math.isfinite(raw):
        return Reading(device, point.id, ts_ms, None, point.unit, "bad", raw, "not_a_number")
    if reg.value_type == "float32":
        # A float32 widened to a double prints 123.8656005859375; its shortest float32
        # representation (123.8656) is what the device meant.
        raw = float(str(numpy.float32(raw)))
    # Rounding to 9 decimals removes binary noise of the scaling (0.1 × 1141 =
    # 114.10000000000001) far below any sensor's resolution.
    value = round(raw * point.scale + point.offset, 9)
    if point.range is not None and not point.range[0] <= value <= point.range[1]:
        return Reading(device, point.id, ts_ms, value, point.unit, "bad", raw, "out_of_range")
    return Reading(device, point.id, ts_ms, value, point.unit, "good", raw)


def failed_points(device: str, points: Sequence[PointConfig], ts_ms: int,
                  reason: str) -> list[Reading]:
    return [Reading(device, p.id, ts_ms, None, p.unit, "bad", None, reason) for p in points]
