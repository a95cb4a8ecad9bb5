"""NMEA 0183 GGA/RMC from RTK GNSS receivers, and dam displacement from GGA (reference §1.3).

Dam-crest GNSS stations (GPS/BeiDou RTK receivers) stream NMEA 0183 over a serial port or TCP.
GGA carries the fix quality, satellite count, HDOP and height; RMC carries date, time and
validity. Only the GP (GPS), BD/GB (BeiDou) and GN (multi-constellation) talkers are accepted:
a sentence from any other talker on a monitoring receiver means a misconfigured output, which
must be seen rather than averaged in.

Every sentence must carry its checksum (XOR of the characters between ``$`` and ``*``): a
corrupted digit in a coordinate is a fake displacement of metres. Coordinates are parsed as
double, since RTK receivers print 7–8 decimals of arc-minutes (1e-7′ ≈ 0.19 mm).

Displacement follows §1.3: baseline and fix to WGS-84 ECEF, the difference rotated into
east-north-up at the baseline, then resolved along the dam when its downstream azimuth is
configured. Settlement is positive downward (s = −U). Only RTK fixed (quality 4) is good
enough for millimetre work by default; any other quality is still computed but flagged.
Quality 0 ("invalid") is never used, even when the receiver still prints a position with it
(seen from real receivers: that position is the last one held, or garbage).

Receivers may append fields to a sentence (a real BeiDou receiver's $GNGGA carries a 15th,
gpsd's ``beidou-bd`` log): NMEA 0183 grows sentences only at their end between versions
(RMC's mode indicator in 2.3, its navigational status in 4.1), so a reader takes the fields
it knows and ignores the trailing ones.

``GnssBaseline`` holds the gates an epoch must pass to be averaged (``gga_rejection``):
fix quality not 0, at least ``min_satellites`` satellites and HDOP at most ``max_hdop``.
The defaults follow the satellite-state table of CH/T 2009-2010 (the Chinese RTK survey
specification): fewer than 5 satellites or a PDOP above 6 is "unusable". GGA carries HDOP,
not PDOP; HDOP never exceeds PDOP, so ``max_hdop: 6`` rejects only epochs that table
already calls unusable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time

from pydantic import Field, field_validator

from drivers.geodesy import dam_components, enu_offset
from vocab.configbase import StrictModel

ACCEPTED_TALKERS = frozenset({"GP", "BD", "GB", "GN"})
"""GPS, BeiDou (two spellings in use) and multi-constellation talkers (§1.3)."""

FIX_QUALITY_NAMES = {
    0: "invalid",
    1: "gps",
    2: "dgps",
    3: "pps",
    4: "rtk_fixed",
    5: "rtk_float",
    6: "dead_reckoning",
    7: "manual",
    8: "simulation",
}
"""GGA fix-quality indicator values."""

GGA_FIELD_COUNT = 14
"""Fields GGA has had since NMEA 0183 2.0; receivers may append more, which are ignored."""
RMC_MIN_FIELDS = 11
"""RMC grew a mode indicator in NMEA 2.3 and a navigational status in 4.1 (12 and 13 fields);
anything after those is ignored too."""

DEFAULT_MIN_SATELLITES = 5
"""CH/T 2009-2010 table 1: fewer than 5 satellites is an unusable RTK observing window."""
DEFAULT_MAX_HDOP = 6.0
"""CH/T 2009-2010 table 1: PDOP above 6 is unusable; HDOP ≤ PDOP, so this is no stricter."""

_GGA_FIELD_NAMES = (
    "UTC time",
    "latitude",
    "N/S indicator",
    "longitude",
    "E/W indicator",
    "fix quality",
    "satellites in use",
    "HDOP",
    "altitude",
    "altitude unit",
    "geoid separation",
    "geoid separation unit",
    "differential age",
    "differential station id",
)
_RMC_FIELD_NAMES = (
    "UTC time",
    "status",
    "latitude",
    "N/S indicator",
    "longitude",
    "E/W indicator",
    "speed over ground",
    "course over ground",
    "date",
    "magnetic variation",
    "magnetic variation E/W",
    "mode indicator",
    "navigational status",
)

_SENTENCE_RE = re.compile(r"^\$(?P<body>[^$*]+)\*(?P<checksum>[0-9A-Fa-f]{2})$")
_TIME_RE = re.compile(r"^(\d{2})(\d{2})(\d{2})(?:\.(\d+))?$")
_DATE_RE = re.compile(r"^(\d{2})(\d{2})(\d{2})$")
_LAT_RE = re.compile(r"^(\d{2})(\d{2}(?:\.\d+)?)$")
_LON_RE = re.compile(r"^(\d{3})(\d{2}(?:\.\d+)?)$")
_DECIMAL_RE = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)$")
_UNSIGNED_INT_RE = re.compile(r"^\d+$")


class NmeaError(ValueError):
    """A sentence that cannot be trusted; the message says why."""


class BadChecksum(NmeaError):
    """The sentence's checksum does not match its characters: line noise."""


class UnacceptedTalker(NmeaError):
    """A well-formed sentence from a talker the monitoring station does not accept."""

    def __init__(self, talker: str, sentence_type: str) -> None:
        accepted = ", ".join(sorted(ACCEPTED_TALKERS))
        super().__init__(f"unknown talker {talker!r} (accepted: {accepted})")
        self.talker = talker
        self.sentence_type = sentence_type


@dataclass(frozen=True)
class GgaFix:
    """A parsed GGA sentence. Position fields are None when the receiver left them empty."""

    talker: str
    utc_time: time | None
    lat_deg: float | None
    lon_deg: float | None
    fix_quality: int
    satellites: int | None
    hdop: float | None
    altitude_m: float | None
    geoid_separation_m: float | None
    differential_age_s: float | None
    differential_station_id: str | None

    @property
    def ellipsoidal_height_m(self) -> float | None:
        """h = altitude above mean sea level + geoid separation, or None if either is missing."""
        if self.altitude_m is None or self.geoid_separation_m is None:
            return None
        return self.altitude_m + self.geoid_separation_m


@dataclass(frozen=True)
class RmcFix:
    """A parsed RMC sentence. ``valid`` is the receiver's status flag (A = valid, V = warning)."""

    talker: str
    utc: datetime | None
    valid: bool
    lat_deg: float | None
    lon_deg: float | None
    speed_knots: float | None
    course_deg: float | None
    magnetic_variation_deg: float | None
    mode: str | None


def nmea_checksum(body: str) -> int:
    """XOR of the characters of a sentence body (between ``$`` and ``*``)."""
    checksum = 0
    for char in body.encode("ascii"):
        checksum ^= char
    return checksum


def parse_sentence(line: str) -> GgaFix | RmcFix:
    """Parse one GGA or RMC sentence, with or without its trailing CR/LF.

    Raises NmeaError on a missing or wrong checksum, a talker other than GP/BD/GB/GN, a sentence
    type other than GGA/RMC, a wrong field count or a malformed field.
    """
    talker, sentence_type, fields = _split_verified(line)
    if sentence_type == "GGA":
        return _parse_gga_fields(talker, fields)
    if sentence_type == "RMC":
        return _parse_rmc_fields(talker, fields)
    raise NmeaError(f"unsupported sentence type {sentence_type!r} (only GGA and RMC are parsed)")


def parse_gga(line: str) -> GgaFix:
    """Parse a GGA sentence; any other sentence type is an NmeaError."""
    talker, sentence_type, fields = _split_verified(line)
    if sentence_type != "GGA":
        raise NmeaError(f"expected a GGA sentence, got {sentence_type!r}")
    return _parse_gga_fields(talker, fields)


def parse_rmc(line: str) -> RmcFix:
    """Parse an RMC sentence; any other sentence type is an NmeaError."""
    talker, sentence_type, fields = _split_verified(line)
    if sentence_type != "RMC":
        raise NmeaError(f"expected an RMC sentence, got {sentence_type!r}")
    return _parse_rmc_fields(talker, fields)


def _split_verified(line: str) -> tuple[str, str, list[str]]:
    stripped = line.strip("\r\n")
    match = _SENTENCE_RE.match(stripped)
    if match is None:
        if not stripped.startswith("$"):
            raise NmeaError("sentence does not start with '$'")
        if "*" not in stripped:
            raise NmeaError("missing checksum ('*' and two hex digits)")
        raise NmeaError("malformed sentence framing (expected $<body>*<two hex digits>)")
    body = match["body"]
    try:
        computed = nmea_checksum(body)
    except UnicodeEncodeError as exc:
        raise NmeaError("non-ASCII character in sentence") from exc
    received = int(match["checksum"], 16)
    if computed != received:
        raise BadChecksum(f"bad checksum: sentence says {received:02X}, computed {computed:02X}")
    address, *fields = body.split(",")
    if len(address) != 5:
        raise NmeaError(f"malformed address field {address!r} (expected talker + type, 5 chars)")
    talker, sentence_type = address[:2], address[2:]
    if talker not in ACCEPTED_TALKERS:
        raise UnacceptedTalker(talker, sentence_type)
    return talker, sentence_type, fields


class _Fields:
    """The data fields of one sentence; each accessor names the field in its error."""

    def __init__(self, sentence_type: str, names: tuple[str, ...], values: list[str]) -> None:
        self._sentence_type = sentence_type
        self._names = names
        self._values = values

    def __len__(self) -> int:
        return len(self._values)

    def raw(self, index: int) -> str:
        return self._values[index]

    def malformed(self, index: int) -> NmeaError:
        # Field numbers are 1-based after the address, as in receiver manuals.
        return NmeaError(
            f"malformed field {index + 1} ({self._names[index]}) of {self._sentence_type}: "
            f"{self._values[index]!r}"
        )

    def utc_time(self, index: int) -> time | None:
        raw = self._values[index]
        if not raw:
            return None
        match = _TIME_RE.match(raw)
        if match is None:
            raise self.malformed(index)
        hours, minutes, seconds = int(match[1]), int(match[2]), int(match[3])
        microseconds = int(((match[4] or "") + "000000")[:6])
        if hours > 23 or minutes > 59 or seconds > 59:
            raise self.malformed(index)
        return time(hours, minutes, seconds, microseconds)

    def utc_date(self, index: int) -> date | None:
        raw = self._values[index]
        if not raw:
            return None
        match = _DATE_RE.match(raw)
        if match is None:
            raise self.malformed(index)
        day, month, two_digit_year = int(match[1]), int(match[2]), int(match[3])
        # NMEA has a two-digit year; no GNSS receiver predates 1980.
        year = 1900 + two_digit_year if two_digit_year >= 80 else 2000 + two_digit_year
        try:
            return date(year, month, day)
        except ValueError as exc:
            raise self.malformed(index) from exc

    def latitude(self, index: int) -> float | None:
        return self._coordinate(index, _LAT_RE, "NS", 90.0)

    def longitude(self, index: int) -> float | None:
        return self._coordinate(index, _LON_RE, "EW", 180.0)

    def _coordinate(
        self, index: int, pattern: re.Pattern[str], hemispheres: str, limit_deg: float
    ) -> float | None:
        raw, hemisphere = self._values[index], self._values[index + 1]
        if not raw and not hemisphere:
            return None
        match = pattern.match(raw)
        if match is None:
            raise self.malformed(index)
        if len(hemisphere) != 1 or hemisphere not in hemispheres:
            raise self.malformed(index + 1)
        minutes = float(match[2])
        if minutes >= 60.0:
            raise self.malformed(index)
        value = int(match[1]) + minutes / 60.0
        if value > limit_deg:
            raise self.malformed(index)
        # The negative hemisphere (S or W) is the second letter of the pair.
        return -value if hemisphere == hemispheres[1] else value

    def decimal(self, index: int) -> float | None:
        raw = self._values[index]
        if not raw:
            return None
        if not _DECIMAL_RE.match(raw):
            raise self.malformed(index)
        return float(raw)

    def count(self, index: int) -> int | None:
        raw = self._values[index]
        if not raw:
            return None
        if not _UNSIGNED_INT_RE.match(raw):
            raise self.malformed(index)
        return int(raw)

    def metres(self, value_index: int) -> float | None:
        """A length followed by its unit field, which must be M (empty only with no value)."""
        value = self.decimal(value_index)
        unit = self._values[value_index + 1]
        # Any other unit would be silently wrong by a factor.
        if unit != "M" and not (unit == "" and value is None):
            raise self.malformed(value_index + 1)
        return value


def _parse_gga_fields(talker: str, values: list[str]) -> GgaFix:
    if len(values) < GGA_FIELD_COUNT:
        raise NmeaError(f"GGA must have at least {GGA_FIELD_COUNT} fields, got {len(values)}")
    fields = _Fields("GGA", _GGA_FIELD_NAMES, values)
    fix_quality = fields.count(5)
    if fix_quality is None or fix_quality not in FIX_QUALITY_NAMES:
        raise fields.malformed(5)
    hdop = fields.decimal(7)
    if hdop is not None and hdop < 0:
        raise fields.malformed(7)
    return GgaFix(
        talker=talker,
        utc_time=fields.utc_time(0),
        lat_deg=fields.latitude(1),
        lon_deg=fields.longitude(3),
        fix_quality=fix_quality,
        satellites=fields.count(6),
        hdop=hdop,
        altitude_m=fields.metres(8),
        geoid_separation_m=fields.metres(10),
        differential_age_s=fields.decimal(12),
        differential_station_id=fields.raw(13) or None,
    )


def _parse_rmc_fields(talker: str, values: list[str]) -> RmcFix:
    if len(values) < RMC_MIN_FIELDS:
        raise NmeaError(f"RMC must have at least {RMC_MIN_FIELDS} fields, got {len(values)}")
    fields = _Fields("RMC", _RMC_FIELD_NAMES, values)
    status = fields.raw(1)
    if status not in ("A", "V"):
        raise fields.malformed(1)
    variation = fields.decimal(9)
    if variation is not None:
        if fields.raw(10) == "W":
            variation = -variation
        elif fields.raw(10) != "E":
            raise fields.malformed(10)
    utc_time, day = fields.utc_time(0), fields.utc_date(8)
    utc = None
    if utc_time is not None and day is not None:
        utc = datetime.combine(day, utc_time, tzinfo=UTC)
    return RmcFix(
        talker=talker,
        utc=utc,
        valid=status == "A",
        lat_deg=fields.latitude(2),
        lon_deg=fields.longitude(4),
        speed_knots=fields.decimal(6),
        course_deg=fields.decimal(7),
        magnetic_variation_deg=variation,
        mode=(fields.raw(11) or None) if len(fields) > 11 else None,
    )


class GnssBaseline(StrictModel):
    """Surveyed position of a GNSS monitoring station at installation, and how to judge fixes.

    ``height_m`` is the ellipsoidal height (altitude + geoid separation), the same quantity a GGA
    yields. ``downstream_azimuth_deg`` is the azimuth (clockwise from north) of the downstream
    direction; without it only east/north/up and settlement are reported.
    """

    lat_deg: float = Field(ge=-90.0, le=90.0, allow_inf_nan=False)
    lon_deg: float = Field(ge=-180.0, le=180.0, allow_inf_nan=False)
    height_m: float = Field(allow_inf_nan=False)
    downstream_azimuth_deg: float | None = Field(
        default=None, ge=0.0, lt=360.0, allow_inf_nan=False
    )
    required_fix_quality: tuple[int, ...] = Field(default=(4,), min_length=1)
    # 0 turns the gate off (and then a GGA without a satellite count passes).
    min_satellites: int = Field(default=DEFAULT_MIN_SATELLITES, ge=0, le=99)
    # None turns the gate off (and then a GGA without an HDOP passes).
    max_hdop: float | None = Field(default=DEFAULT_MAX_HDOP, gt=0.0, allow_inf_nan=False)

    @field_validator("required_fix_quality")
    @classmethod
    def _known_fix_qualities(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        unknown = [quality for quality in value if quality not in FIX_QUALITY_NAMES]
        if unknown:
            raise ValueError(f"unknown GGA fix quality {unknown}; valid values are 1–8")
        if 0 in value:
            raise ValueError("fix quality 0 means no fix (invalid) and is never averaged; "
                             "valid values are 1–8")
        return value


@dataclass(frozen=True)
class EpochRejection:
    """Why a positioned GGA is not averaged: ``reason`` is a stable snake_case health counter
    name, ``detail`` says it for a person."""

    reason: str
    detail: str


def gga_rejection(fix: GgaFix, baseline: GnssBaseline) -> EpochRejection | None:
    """The first gate a GGA fails (fix quality 0, too few satellites, HDOP too high), or None.

    A missing satellite count or HDOP fails its gate while the gate is on: a receiver that
    does not say how good its fix is cannot show that it is good enough.
    """
    if fix.fix_quality == 0:
        return EpochRejection("epochs_invalid_fix", "fix quality 0 (invalid)")
    minimum, maximum = baseline.min_satellites, baseline.max_hdop
    if minimum and fix.satellites is None:
        return EpochRejection(
            "epochs_few_satellites", f"no satellite count (min_satellites {minimum})"
        )
    if minimum and fix.satellites is not None and fix.satellites < minimum:
        return EpochRejection(
            "epochs_few_satellites", f"{fix.satellites} satellites < min_satellites {minimum}"
        )
    if maximum is not None and fix.hdop is None:
        return EpochRejection("epochs_high_hdop", f"no HDOP (max_hdop {maximum:g})")
    if maximum is not None and fix.hdop is not None and fix.hdop > maximum:
        return EpochRejection("epochs_high_hdop", f"HDOP {fix.hdop:g} > max_hdop {maximum:g}")
    return None


@dataclass(frozen=True)
class GnssDisplacement:
    """Displacement of a GNSS station from its baseline, in millimetres (§1.3).

    ``downstream_mm``/``axis_mm`` are None when the baseline has no downstream azimuth.
    Settlement is positive downward. ``flags`` holds "fix_not_rtk" when the fix quality is not
    one the baseline requires; the values are still computed.
    """

    east_mm: float
    north_mm: float
    up_mm: float
    downstream_mm: float | None
    axis_mm: float | None
    settlement_mm: float
    fix_quality: int
    satellites: int | None
    hdop: float | None
    flags: tuple[str, ...]


def gga_displacement(fix: GgaFix, baseline: GnssBaseline) -> GnssDisplacement:
    """Displacement of a GGA position from the baseline.

    Raises NmeaError when the GGA lacks latitude, longitude, altitude or geoid separation (a
    receiver without a fix leaves them empty), since there is no position to compare, and when
    its fix quality is 0: whatever position an invalid fix carries is not a measurement.
    """
    height = fix.ellipsoidal_height_m
    if fix.lat_deg is None or fix.lon_deg is None or height is None:
        missing = [
            name
            for name, value in (
                ("latitude", fix.lat_deg),
                ("longitude", fix.lon_deg),
                ("altitude", fix.altitude_m),
                ("geoid separation", fix.geoid_separation_m),
            )
            if value is None
        ]
        raise NmeaError(
            f"GGA has no position (fix quality {fix.fix_quality}); empty: {', '.join(missing)}"
        )
    if fix.fix_quality == 0:
        raise NmeaError("GGA fix quality 0 (invalid): its position is not a fix")
    offset = enu_offset(
        baseline.lat_deg, baseline.lon_deg, baseline.height_m, fix.lat_deg, fix.lon_deg, height
    )
    east_mm = offset.east_m * 1000.0
    north_mm = offset.north_m * 1000.0
    up_mm = offset.up_m * 1000.0
    downstream_mm: float | None = None
    axis_mm: float | None = None
    if baseline.downstream_azimuth_deg is not None:
        components = dam_components(east_mm, north_mm, baseline.downstream_azimuth_deg)
        downstream_mm, axis_mm = components.downstream, components.axis
    flags: tuple[str, ...] = ()
    if fix.fix_quality not in baseline.required_fix_quality:
        flags = ("fix_not_rtk",)
    return GnssDisplacement(
        east_mm=east_mm,
        north_mm=north_mm,
        up_mm=up_mm,
        downstream_mm=downstream_mm,
        axis_mm=axis_mm,
        settlement_mm=-up_mm,
        fix_quality=fix.fix_quality,
        satellites=fix.satellites,
        hdop=fix.hdop,
        flags=flags,
    )
