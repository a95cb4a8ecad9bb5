"""From the words of a read block to readings: decoding, scaling and range checks.

Bad sensor data never raises out of here: every failure becomes a reading with quality
``bad`` and the reason, so one broken point cannot stop the others of its device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from drivers.devices import DeviceConfig, PointConfig
from drivers.readplan import ReadBlock
from drivers.registers import (
    RegisterDecodeError,
    decode_registers,
    extract_bit,
    shortest_float32,
)
from drivers.tipping_bucket import RainCounterTracker
from vocab.model import Reading


def decode_point(device: str, point: PointConfig, block: ReadBlock,
                 values: Sequence[int | bool], ts_ms: int) -> Reading:
    reg = point.register
    assert reg is not None, "plan_reads only takes points with a register"
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
    if reg.value_type == "float32" and math.isfinite(raw):
        # A float32 widened to a double prints 123.8656005859375; its shortest float32
        # representation (123.8656) is what the device meant.
        raw = shortest_float32(raw)
    return scaled_reading(device, point, raw, ts_ms)


def scaled_reading(device: str, point: PointConfig, raw: float, ts_ms: int) -> Reading:
    """A number read off the wire (register, text line, NMEA) to a checked reading."""
    if not math.isfinite(raw):
        return Reading(device, point.id, ts_ms, None, point.unit, "bad", raw, "not_a_number")
    # Rounding to 9 decimals removes binary noise of the scaling (0.1 × 1141 =
    # 114.10000000000001) far below any sensor's resolution.
    value = round(raw * point.scale + point.offset, 9)
    # The range is in the point's engineering unit: for a calibrated sensor or a rain
    # counter that is the converted value, checked by DeviceConversions instead.
    converted = point.calibration is not None or point.tipping_bucket is not None
    if not converted and not in_range(point, value):
        return Reading(device, point.id, ts_ms, value, point.unit, "bad", raw, "out_of_range")
    return Reading(device, point.id, ts_ms, value, point.unit, "good", raw)


def in_range(point: PointConfig, value: float) -> bool:
    return point.range is None or point.range[0] <= value <= point.range[1]


def failed_points(device: str, points: Sequence[PointConfig], ts_ms: int,
                  reason: str) -> list[Reading]:
    return [Reading(device, p.id, ts_ms, None, p.unit, "bad", None, reason) for p in points]


class DeviceConversions:
    """Per-device conversions that need more than one register or than one poll.

    Calibrations may need companion points of the same poll (a vibrating-wire gauge's
    thermistor); tipping-bucket counters need the previous poll's count. Both run after
    every point of the device has been decoded, on engineering values.
    """

    def __init__(self, device: DeviceConfig) -> None:
        self.device = device
        self.points = {p.id: p for p in device.points}
        self.rain = {p.id: RainCounterTracker(p.tipping_bucket)
                     for p in device.points if p.tipping_bucket is not None}
        self.calibrated = [p for p in device.points if p.calibration is not None]

    def apply(self, readings: list[Reading]) -> list[Reading]:
        if not self.rain and not self.calibrated:
            return readings
        by_point = {r.point: r for r in readings}
        for point in self.calibrated:
            reading = by_point.get(point.id)
            if reading is not None and reading.quality == "good":
                by_point[point.id] = self._calibrate(point, reading, by_point)
        for point_id, tracker in self.rain.items():
            reading = by_point.get(point_id)
            if reading is not None and reading.quality == "good":
                by_point[point_id] = self._rain(tracker, reading)
        return [by_point[r.point] for r in readings]

    def _calibrate(self, point: PointConfig, reading: Reading,
                   by_point: dict[str, Reading]) -> Reading:
        assert point.calibration is not None and reading.value is not None
        # Loaded already: the point's calibration is one of its objects (drivers/devices.py).
        from drivers.calibration import CalibrationError

        companions = {
            pid: r.value for pid, r in by_point.items()
            if r.quality == "good" and r.value is not None and pid != point.id
        }
        try:
            result = point.calibration.apply(reading.value, companions)
        except CalibrationError as exc:
            return Reading(reading.device, reading.point, reading.ts_ms, None, reading.unit,
                           "bad", reading.raw, f"{exc.reason}: {exc}")
        value = round(result.value, 9)
        reason = ",".join(result.flags) or None
        if not result.measured:
            # A dry piezometer: the value bounds the level but is not one (vocab DRY), so
            # it is kept for the record and marked bad, and no range applies to it.
            return Reading(reading.device, reading.point, reading.ts_ms, value, reading.unit,
                           "bad", reading.raw, reason)
        if not in_range(point, value):
            return Reading(reading.device, reading.point, reading.ts_ms, value, reading.unit,
                           "bad", reading.raw, "out_of_range")
        return Reading(reading.device, reading.point, reading.ts_ms, value, reading.unit,
                       "good", reading.raw, reason)

    def _rain(self, tracker: RainCounterTracker, reading: Reading) -> Reading:
        assert reading.raw is not None
        try:
            increment = tracker.update(int(reading.raw), reading.ts_ms)
        except ValueError as exc:
            return Reading(reading.device, reading.point, reading.ts_ms, None, reading.unit,
                           "bad", reading.raw, f"counter_error: {exc}")
        if increment is None:
            # The first count after a start only sets the baseline: the rain since the
            # last poll of the previous run is unknown, not zero.
            return Reading(reading.device, reading.point, reading.ts_ms, None, reading.unit,
                           "suspect", reading.raw, "counter_baseline")
        if not in_range(self.points[reading.point], increment.mm):
            return Reading(reading.device, reading.point, reading.ts_ms, increment.mm,
                           reading.unit, "bad", reading.raw, "out_of_range")
        quality = "suspect" if increment.flags else "good"
        return Reading(reading.device, reading.point, reading.ts_ms, increment.mm,
                       reading.unit, quality, reading.raw, ",".join(increment.flags) or None)
