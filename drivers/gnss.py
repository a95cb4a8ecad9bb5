"""GNSS displacement stations: an RTK receiver streaming NMEA 0183 on a serial port.

Models a dam-crest GPS/BeiDou monitoring receiver working as an RTK rover against a
reference station, printing GGA and RMC once a second (free-running; nothing is sent to
it). Configuration: an ``nmea_gnss`` bus (``NmeaGnssBus``: port,
baudrate, parity, stopbits) with exactly one device, whose ``baseline`` is the station's
``GnssBaseline`` (drivers/nmea.py); each point names a ``GnssDisplacement`` value with
``field``: east_mm, north_mm, up_mm, downstream_mm, axis_mm, settlement_mm, fix_quality,
satellites, hdop.

What a poll reports (reference §1.3, §2.5: single 1 Hz RTK epochs scatter by millimetres,
so nothing is reported per epoch):

* the **mean of the epochs received during the poll interval**. Epochs with a required fix
  quality (RTK fixed by default) are averaged and all others dropped and counted; only
  when an interval has no such epoch are the lesser fixes averaged instead, and then
  every position value is ``suspect`` with the reason ``fix_not_rtk: quality 5
  (rtk_float)``. The mean is plain, not robust: a receiver's RTK-fixed epochs rarely
  jump, and a jump that lasts is what a displacement monitor exists to see;
* ``fix_quality`` of the latest averaged epoch, the *lowest* ``satellites`` and the
  *highest* ``hdop`` among them: the conservative figure for judging the mean;
* stamped when the last averaged epoch arrived.

Sentences with a bad checksum are skipped and counted (health counter ``bad_checksum``),
as are other malformed ones (``rejected_sentences``); other sentence types (GSV, GSA,
VTG...) are ignored. An interval without any positioned epoch gives bad readings:
``no_fix`` when the receiver talked but had no position, ``no_data`` when it was silent,
or the port's error when it is gone (re-opened with bounded backoff).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import structlog

from drivers.bus import (
    BusHealth,
    BusType,
    SerialPortSettings,
    check_alone_on_port,
    check_field_points,
    wait_until,
)
from drivers.decode import DeviceConversions, failed_points, scaled_reading
from drivers.devices import DeviceConfig, PointConfig
from drivers.lineport import Line, LinePort, PortUnavailable
from drivers.nmea import (
    FIX_QUALITY_NAMES,
    GgaFix,
    GnssBaseline,
    GnssDisplacement,
    NmeaError,
    gga_displacement,
    parse_sentence,
)
from vocab.checking import PathKey, Report
from vocab.ids import Ident
from vocab.model import PollResult, Reading, now_ms

log = structlog.get_logger("drivers.gnss")


class NmeaGnssBus(SerialPortSettings):
    """A serial port with a GNSS receiver streaming NMEA 0183: see drivers/gnss."""

    id: Ident
    type: Literal["nmea_gnss"]


# The values a GNSS point may name with 'field': the components of drivers.nmea's
# GnssDisplacement (its 'flags' become the reading's quality instead).
GNSS_FIELDS: tuple[str, ...] = ("east_mm", "north_mm", "up_mm", "downstream_mm", "axis_mm",
                                "settlement_mm", "fix_quality", "satellites", "hdop")

POSITION_FIELDS = ("east_mm", "north_mm", "up_mm", "downstream_mm", "axis_mm", "settlement_mm")
PARSED_SENTENCES = ("GGA", "RMC")


@dataclass(frozen=True, slots=True)
class Epoch:
    displacement: GnssDisplacement
    ts_ms: int


@dataclass(frozen=True)
class IntervalMean:
    """The averaged position of one poll interval and how far to trust it."""

    values: dict[str, float | None]
    epochs: int
    ts_ms: int
    suspect_reason: str | None


class _ExactSum:
    """A running sum that ends as ``math.fsum`` of every value added would.

    Keeps Shewchuk's non-overlapping partials (the ones ``math.fsum`` builds, rarely more
    than a few), so a day of epochs costs a few floats instead of a list of them all.
    """

    __slots__ = ("partials",)

    def __init__(self) -> None:
        self.partials: list[float] = []

    def add(self, x: float) -> None:
        i = 0
        for y in self.partials:
            if abs(x) < abs(y):
                x, y = y, x
            high = x + y
            low = y - (high - x)
            if low:
                self.partials[i] = low
                i += 1
            x = high
        self.partials[i:] = [x]

    def total(self) -> float:
        return math.fsum(self.partials)


class _EpochGroup:
    """What an interval's mean needs of one group of epochs, accumulated as they come."""

    def __init__(self) -> None:
        self.count = 0
        self.sums = {name: _ExactSum() for name in POSITION_FIELDS}
        self.missing: set[str] = set()  # fields None in some epoch: no mean
        self.last: Epoch | None = None
        self.min_satellites: int | None = None
        self.max_hdop: float | None = None

    def add(self, epoch: Epoch) -> None:
        d = epoch.displacement
        self.count += 1
        for name, total in self.sums.items():
            value = getattr(d, name)
            if value is None:
                self.missing.add(name)
            else:
                total.add(value)
        self.last = epoch
        if d.satellites is not None:
            self.min_satellites = (d.satellites if self.min_satellites is None
                                   else min(self.min_satellites, d.satellites))
        if d.hdop is not None:
            self.max_hdop = d.hdop if self.max_hdop is None else max(self.max_hdop, d.hdop)


class EpochAverager:
    """The epochs of one poll interval, reduced as they arrive to what their mean needs.

    A receiver prints an epoch a second, so a daily interval would otherwise hold 86,400
    epochs (about 35 MiB) until the poll; this holds a few dozen floats whatever the
    interval. ``mean()`` is what ``average_epochs`` gives for the same epochs.
    """

    def __init__(self) -> None:
        self._good = _EpochGroup()
        self._other = _EpochGroup()

    def __len__(self) -> int:
        return self._good.count + self._other.count

    def add(self, epoch: Epoch) -> None:
        (self._other if epoch.displacement.flags else self._good).add(epoch)

    def mean(self) -> IntervalMean | None:
        """Mean of the required-quality epochs, or of the others when there are none."""
        used = self._good if self._good.count else self._other
        if used.last is None:
            return None
        values: dict[str, float | None] = {
            name: None if name in used.missing else total.total() / used.count
            for name, total in used.sums.items()}
        last = used.last.displacement
        values["fix_quality"] = float(last.fix_quality)
        values["satellites"] = (float(used.min_satellites) if used.min_satellites is not None
                                else None)
        values["hdop"] = used.max_hdop
        reason = None
        if not self._good.count:
            name = FIX_QUALITY_NAMES.get(last.fix_quality, "unknown")
            reason = f"fix_not_rtk: quality {last.fix_quality} ({name})"
        return IntervalMean(values, used.count, used.last.ts_ms, reason)


def average_epochs(epochs: list[Epoch]) -> IntervalMean | None:
    """Mean of the required-quality epochs, or of the others when there are none."""
    averager = EpochAverager()
    for epoch in epochs:
        averager.add(epoch)
    return averager.mean()


class GnssDriver:
    """The GNSS receiver of one serial port (a ``FieldDriver``): always listened to."""

    def __init__(self, bus: NmeaGnssBus, devices: list[DeviceConfig],
                 health: BusHealth) -> None:
        if len(devices) != 1 or devices[0].baseline is None:
            raise ValueError(f"nmea_gnss bus {bus.id} needs exactly one device with a baseline")
        self.bus = bus
        self.device = devices[0]
        self.baseline: GnssBaseline = devices[0].baseline
        self.health = health
        self.conversions = DeviceConversions(self.device)
        self.port = LinePort(bus.id, bus, health, log)
        self._epochs = EpochAverager()
        self._sentences = 0
        self._without_position: GgaFix | None = None
        self._rtk = True

    @property
    def listening(self) -> Sequence[str]:
        return (self.device.id,)

    # The port is opened while listening: nothing to re-open on a timer.
    reopen_at: float | None = None

    async def reopen(self) -> None:
        return None

    def close(self) -> None:
        self.port.close()

    async def listen(self, until: float, wake: asyncio.Event) -> None:
        while not wake.is_set() and time.monotonic() < until:
            try:
                await self.port.ensure_open()
                line = await self.port.read_line(min(until - time.monotonic(), 1.0))
            except PortUnavailable:
                await wait_until(min(until, self.port.retry_at or until), wake)
                continue
            if line is not None:
                self.take(line)

    def take(self, line: Line) -> None:
        """Parse one line from the receiver into the current interval's epochs."""
        text = line.text.strip()
        if text.startswith("$") and text[3:6] not in PARSED_SENTENCES:
            self.health.count("ignored_sentences")
            return
        try:
            sentence = parse_sentence(text)
        except NmeaError as exc:
            # A corrupted digit in a coordinate is a fake displacement of metres: a
            # sentence that fails its checksum is never used, only counted.
            bad_checksum = str(exc).startswith("bad checksum")
            self.health.count("bad_checksum" if bad_checksum else "rejected_sentences")
            return
        self._sentences += 1
        if not isinstance(sentence, GgaFix):
            return
        try:
            displacement = gga_displacement(sentence, self.baseline)
        except NmeaError:
            self._without_position = sentence
            return
        self._epochs.add(Epoch(displacement, line.ts_ms))

    async def poll(self, device: DeviceConfig) -> PollResult:
        epochs, self._epochs = self._epochs, EpochAverager()
        sentences, self._sentences = self._sentences, 0
        without, self._without_position = self._without_position, None
        mean = epochs.mean()
        failure: str | None = None
        if mean is None:
            if not self.port.is_open:
                failure = self.port.reason
            elif without is not None:
                failure = f"no_fix: GGA without position (quality {without.fix_quality})"
            elif sentences:
                failure = "no_fix: no GGA received"
            else:
                failure = "no_data"
            readings = failed_points(device.id, device.points, now_ms(), failure)
        else:
            self.health.count("epochs_averaged", mean.epochs)
            self.health.count("epochs_dropped", len(epochs) - mean.epochs)
            self._note_fix(mean)
            readings = [self._reading(device.id, point, mean) for point in device.points]
        readings = self.conversions.apply(readings)
        return PollResult(self.bus.id, device.id, tuple(readings), 0, failure is None, failure)

    @staticmethod
    def _reading(device_id: str, point: PointConfig, mean: IntervalMean) -> Reading:
        value = mean.values.get(point.field or "")
        if value is None:
            return Reading(
                device_id, point.id, mean.ts_ms, None, point.unit, "bad", None, "missing_field"
            )
        reading = scaled_reading(device_id, point, value, mean.ts_ms)
        if mean.suspect_reason and point.field in POSITION_FIELDS and reading.quality == "good":
            return Reading(
                reading.device,
                reading.point,
                reading.ts_ms,
                reading.value,
                reading.unit,
                "suspect",
                reading.raw,
                mean.suspect_reason,
            )
        return reading

    def _note_fix(self, mean: IntervalMean) -> None:
        rtk = mean.suspect_reason is None
        if rtk != self._rtk:
            self._rtk = rtk
            if rtk:
                log.info("gnss_fix_required_quality", bus=self.bus.id, device=self.device.id)
            else:
                log.warning(
                    "gnss_fix_degraded",
                    bus=self.bus.id,
                    device=self.device.id,
                    reason=mean.suspect_reason,
                )


def check_device(bus: NmeaGnssBus, device: DeviceConfig, here: PathKey,
                 earlier: Sequence[DeviceConfig], report: Report) -> None:
    """A receiver needs its surveyed baseline, and each point a GNSS value."""
    if device.baseline is None:
        report(here, f"device {device.id!r} on nmea_gnss bus {bus.id!r} needs 'baseline' "
                     "(lat_deg, lon_deg, height_m of the station)")
    check_alone_on_port(bus, device, here, earlier, lambda d: True, report)
    for where, name in check_field_points(bus, device, here, GNSS_FIELDS, report):
        if name not in GNSS_FIELDS:
            report(where, f"field {name!r} is not a GNSS value (one of: "
                          f"{', '.join(GNSS_FIELDS)})")
        elif name in ("downstream_mm", "axis_mm") and device.baseline is not None \
                and device.baseline.downstream_azimuth_deg is None:
            report(where, f"{name} needs baseline.downstream_azimuth_deg (the dam's "
                          "downstream direction)")


def make_driver(bus: Any, devices: list[DeviceConfig], health: BusHealth) -> GnssDriver:
    return GnssDriver(bus, devices, health)


BUS_TYPE = BusType(NmeaGnssBus, check_device, make_driver,
                   device_keys={"baseline": "an nmea_gnss bus"})
