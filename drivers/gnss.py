"""GNSS displacement stations: an RTK receiver streaming NMEA 0183 on a serial port.

Models a dam-crest GPS/BeiDou monitoring receiver working as an RTK rover against a
reference station, printing GGA and RMC once a second (free-running; nothing is sent to
it). Configuration (edge/config.py): an ``nmea_gnss`` bus (``NmeaGnssBus``: port,
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

Which GGA become epochs (``IntervalEpochs``): sentences with a bad checksum are skipped and
counted (health counter ``bad_checksum``), as are other malformed ones
(``rejected_sentences``) and those from a talker not accepted (``unaccepted_talker``);
other sentence types (GSV, GSA, VTG...) are ignored. A positioned GGA that fails a gate of
the baseline is counted by reason and never averaged: ``epochs_invalid_fix`` (quality 0,
whatever position it carries), ``epochs_few_satellites`` (``min_satellites``),
``epochs_high_hdop`` (``max_hdop``). Receivers that print the same epoch under several
talkers (GPGGA, GBGGA, GNGGA with one UTC time) have it averaged once: the first of them
that passes the gates; the others count as ``epochs_repeated``.

An interval without any averaged epoch gives bad readings: ``no_fix`` saying why (every
epoch rejected and by which gate, GGA without position, GGA only from a talker not
accepted, or no GGA at all), ``no_data`` when the receiver was silent, or the port's error
when it is gone (re-opened with bounded backoff).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import time as dt_time
from typing import Any, Literal

import structlog

from drivers.bus import (
    BusHealth,
    BusType,
    SerialPortSettings,
    check_alone_on_port,
    check_field_points,
)
from drivers.decode import DeviceConversions, failed_points, scaled_reading
from drivers.devices import DeviceConfig, PointConfig
from drivers.lineport import Line, LinePort, listen_lines
from drivers.nmea import (
    ACCEPTED_TALKERS,
    FIX_QUALITY_NAMES,
    BadChecksum,
    GgaFix,
    GnssBaseline,
    GnssDisplacement,
    NmeaError,
    UnacceptedTalker,
    gga_displacement,
    gga_rejection,
    parse_sentence,
)
from vocab.checking import PathKey, Report
from vocab.ids import Ident
from vocab.model import PollResult, Reading, now_ms
from vocab.waits import Wake

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


@dataclass(frozen=True)
class IntervalOutcome:
    """What one poll interval of a receiver's lines amounts to.

    ``mean`` is None when no epoch was averaged; ``no_fix`` then says why (``no_data`` or
    ``no_fix: ...``). ``dropped`` counts epochs received but left out of the mean (lesser
    fix qualities beside required ones).
    """

    mean: IntervalMean | None
    dropped: int
    no_fix: str


class IntervalEpochs:
    """Turns a receiver's lines into the epochs of the current poll interval.

    ``count`` is told the name of each health counter to raise (the poller's
    ``BusHealth.count``): one per sentence skipped or epoch rejected, by reason.
    """

    def __init__(self, baseline: GnssBaseline, count: Callable[[str], None]) -> None:
        self.baseline = baseline
        self._count = count
        self._averager = EpochAverager()
        self._sentences = 0
        self._without_position: GgaFix | None = None
        self._unaccepted_talker: str | None = None
        self._rejections: dict[str, int] = {}
        self._rejection_details: dict[str, str] = {}
        # The UTC time of the last averaged epoch; kept across intervals, since a poll can
        # fall between the GP and GN sentences of one epoch.
        self._last_time: dt_time | None = None

    def take(self, text: str, ts_ms: int) -> None:
        """One line from the receiver, received at ``ts_ms``."""
        text = text.strip()
        if text.startswith("$") and text[3:6] not in PARSED_SENTENCES:
            self._count("ignored_sentences")
            return
        try:
            sentence = parse_sentence(text)
        except BadChecksum:
            # A corrupted digit in a coordinate is a fake displacement of metres: a
            # sentence that fails its checksum is never used, only counted.
            self._count("bad_checksum")
            return
        except UnacceptedTalker as exc:
            self._count("unaccepted_talker")
            if exc.sentence_type == "GGA":
                self._unaccepted_talker = exc.talker
            return
        except NmeaError:
            self._count("rejected_sentences")
            return
        self._sentences += 1
        if isinstance(sentence, GgaFix):
            self._take_gga(sentence, ts_ms)

    def _take_gga(self, fix: GgaFix, ts_ms: int) -> None:
        if fix.lat_deg is None or fix.lon_deg is None or fix.ellipsoidal_height_m is None:
            self._without_position = fix
            return
        if fix.utc_time is not None and fix.utc_time == self._last_time:
            self._count("epochs_repeated")
            return
        rejection = gga_rejection(fix, self.baseline)
        if rejection is not None:
            self._count(rejection.reason)
            self._rejections[rejection.reason] = self._rejections.get(rejection.reason, 0) + 1
            self._rejection_details[rejection.reason] = rejection.detail
            return
        self._last_time = fix.utc_time
        self._averager.add(Epoch(gga_displacement(fix, self.baseline), ts_ms))

    def close(self) -> IntervalOutcome:
        """The interval's outcome; the next line starts a new interval."""
        mean = self._averager.mean()
        dropped = len(self._averager) - (mean.epochs if mean is not None else 0)
        outcome = IntervalOutcome(mean, dropped, self._no_fix())
        self._averager = EpochAverager()
        self._sentences = 0
        self._without_position = None
        self._unaccepted_talker = None
        self._rejections = {}
        self._rejection_details = {}
        return outcome

    def _no_fix(self) -> str:
        if self._rejections:
            total = sum(self._rejections.values())
            reasons = "; ".join(
                f"{n}× {self._rejection_details[reason]}"
                for reason, n in sorted(self._rejections.items()))
            return f"no_fix: all {total} positioned GGA rejected: {reasons}"
        if self._without_position is not None:
            return f"no_fix: GGA without position (quality {self._without_position.fix_quality})"
        if self._unaccepted_talker is not None:
            accepted = ", ".join(sorted(ACCEPTED_TALKERS))
            return (f"no_fix: GGA only from talker {self._unaccepted_talker!r}, "
                    f"not accepted (accepted: {accepted})")
        if self._sentences:
            return "no_fix: no GGA received"
        return "no_data"


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
        self.interval = IntervalEpochs(self.baseline, self.health.count)
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

    async def listen(self, until: float, wake: Wake) -> None:
        await listen_lines(self.port, until, wake, self.take)

    def take(self, line: Line) -> None:
        """Parse one line from the receiver into the current interval's epochs."""
        self.interval.take(line.text, line.ts_ms)

    async def poll(self, device: DeviceConfig) -> PollResult:
        outcome = self.interval.close()
        mean = outcome.mean
        failure: str | None = None
        if mean is None:
            failure = outcome.no_fix if self.port.is_open else self.port.reason
            readings = failed_points(device.id, device.points, now_ms(), failure)
        else:
            self.health.count("epochs_averaged", mean.epochs)
            self.health.count("epochs_dropped", outcome.dropped)
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
