"""NMEA parsing and GNSS displacement against independently built sentences (reference §1.3)."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, time

import numpy as np
import pytest
from pydantic import ValidationError

from drivers.geodesy import (
    WGS84_A_M,
    dam_components,
    ecef_delta_to_enu,
    enu_offset,
    geodetic_to_ecef,
)
from drivers.nmea import (
    GgaFix,
    GnssBaseline,
    NmeaError,
    RmcFix,
    gga_displacement,
    nmea_checksum,
    parse_gga,
    parse_rmc,
    parse_sentence,
)

# WGS-84, written out here rather than imported so the expected values are independent.
A = 6378137.0
F = 1 / 298.257223563
E2 = F * (2 - F)

# A dam-crest station near Quzhou, Zhejiang.
BASE_LAT, BASE_LON, BASE_H = 28.95678912, 118.87123456, 95.4321


def with_checksum(body: str) -> str:
    checksum = 0
    for character in body:
        checksum ^= ord(character)
    return f"${body}*{checksum:02X}"


def nmea_lat(lat: float) -> tuple[str, str]:
    degrees = int(abs(lat))
    minutes = (abs(lat) - degrees) * 60.0
    return f"{degrees:02d}{minutes:011.8f}", "N" if lat >= 0 else "S"


def nmea_lon(lon: float) -> tuple[str, str]:
    degrees = int(abs(lon))
    minutes = (abs(lon) - degrees) * 60.0
    return f"{degrees:03d}{minutes:011.8f}", "E" if lon >= 0 else "W"


def gga_body(
    talker: str = "GN",
    lat: float = BASE_LAT,
    lon: float = BASE_LON,
    quality: int = 4,
    altitude: str = "87.0000",
    separation: str = "8.4321",
) -> str:
    lat_field, ns = nmea_lat(lat)
    lon_field, ew = nmea_lon(lon)
    return (
        f"{talker}GGA,023015.00,{lat_field},{ns},{lon_field},{ew},{quality},24,0.6,"
        f"{altitude},M,{separation},M,1.0,0001"
    )


def offset_position(east_m: float, north_m: float, up_m: float) -> tuple[float, float, float]:
    """Move the baseline by a small ENU offset using the meridian and prime-vertical radii."""
    lat = math.radians(BASE_LAT)
    w = math.sqrt(1 - E2 * math.sin(lat) ** 2)
    meridian_radius = A * (1 - E2) / w**3
    prime_vertical_radius = A / w
    d_lat = north_m / (meridian_radius + BASE_H)
    d_lon = east_m / ((prime_vertical_radius + BASE_H) * math.cos(lat))
    return BASE_LAT + math.degrees(d_lat), BASE_LON + math.degrees(d_lon), BASE_H + up_m


# --- checksum and framing --------------------------------------------------------------------

CLASSIC_GGA = "$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47"
CLASSIC_RMC = "$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A"


def test_checksum_of_classic_sentence() -> None:
    body = CLASSIC_GGA[1 : CLASSIC_GGA.index("*")]
    assert nmea_checksum(body) == 0x47


def test_classic_gga() -> None:
    fix = parse_gga(CLASSIC_GGA + "\r\n")
    assert fix.talker == "GP"
    assert fix.utc_time == time(12, 35, 19)
    assert fix.lat_deg == pytest.approx(48 + 7.038 / 60, abs=1e-12)
    assert fix.lon_deg == pytest.approx(11 + 31.0 / 60, abs=1e-12)
    assert fix.fix_quality == 1
    assert fix.satellites == 8
    assert fix.hdop == 0.9
    assert fix.altitude_m == 545.4
    assert fix.geoid_separation_m == 46.9
    assert fix.ellipsoidal_height_m == pytest.approx(592.3)
    assert fix.differential_age_s is None
    assert fix.differential_station_id is None


def test_classic_rmc() -> None:
    fix = parse_rmc(CLASSIC_RMC)
    assert fix.talker == "GP"
    assert fix.valid
    assert fix.utc == datetime(1994, 3, 23, 12, 35, 19, tzinfo=UTC)
    assert fix.lat_deg == pytest.approx(48 + 7.038 / 60, abs=1e-12)
    assert fix.lon_deg == pytest.approx(11 + 31.0 / 60, abs=1e-12)
    assert fix.speed_knots == 22.4
    assert fix.course_deg == 84.4
    assert fix.magnetic_variation_deg == -3.1
    assert fix.mode is None


def test_rmc_nmea_41_with_mode_and_status() -> None:
    sentence = with_checksum(
        "BDRMC,023015.50,V,2857.40734720,S,11852.27407360,W,0.01,,150624,,,D,V"
    )
    fix = parse_sentence(sentence)
    assert isinstance(fix, RmcFix)
    assert fix.talker == "BD"
    assert not fix.valid
    assert fix.utc == datetime(2024, 6, 15, 2, 30, 15, 500000, tzinfo=UTC)
    assert fix.lat_deg == pytest.approx(-(28 + 57.4073472 / 60), abs=1e-12)
    assert fix.lon_deg == pytest.approx(-(118 + 52.2740736 / 60), abs=1e-12)
    assert fix.course_deg is None
    assert fix.magnetic_variation_deg is None
    assert fix.mode == "D"


@pytest.mark.parametrize("talker", ["GP", "BD", "GB", "GN"])
def test_accepted_talkers(talker: str) -> None:
    fix = parse_sentence(with_checksum(gga_body(talker=talker)))
    assert isinstance(fix, GgaFix)
    assert fix.talker == talker


@pytest.mark.parametrize("talker", ["GL", "GA", "QZ", "PU"])
def test_other_talkers_rejected(talker: str) -> None:
    with pytest.raises(NmeaError, match=f"unknown talker '{talker}'"):
        parse_sentence(with_checksum(gga_body(talker=talker)))


def test_bad_checksum() -> None:
    good = with_checksum(gga_body())
    # One digit of the latitude changed, checksum left as it was.
    corrupted = good.replace("2857.", "2858.", 1)
    assert corrupted != good
    with pytest.raises(NmeaError, match="bad checksum"):
        parse_sentence(corrupted)


def test_checksum_off_by_one() -> None:
    good = with_checksum(gga_body())
    value = int(good[-2:], 16)
    with pytest.raises(NmeaError, match="bad checksum"):
        parse_sentence(f"{good[:-2]}{(value + 1) % 256:02X}")


def test_lowercase_checksum_accepted() -> None:
    good = with_checksum(gga_body())
    assert parse_gga(good[:-2] + good[-2:].lower()) == parse_gga(good)


def test_missing_checksum() -> None:
    with pytest.raises(NmeaError, match="missing checksum"):
        parse_sentence("$" + gga_body())


def test_missing_dollar() -> None:
    with pytest.raises(NmeaError, match=r"start with '\$'"):
        parse_sentence(with_checksum(gga_body())[1:])


def test_unsupported_sentence_type() -> None:
    with pytest.raises(NmeaError, match="unsupported sentence type 'GSV'"):
        parse_sentence(with_checksum("GPGSV,3,1,11,03,03,111,00,04,15,270,00,06,01,010,00"))


def test_parse_gga_refuses_rmc() -> None:
    with pytest.raises(NmeaError, match="expected a GGA"):
        parse_gga(CLASSIC_RMC)


def test_parse_rmc_refuses_gga() -> None:
    with pytest.raises(NmeaError, match="expected an RMC"):
        parse_rmc(CLASSIC_GGA)


def test_wrong_field_count() -> None:
    with pytest.raises(NmeaError, match="GGA must have at least 14 fields, got 13"):
        parse_sentence(with_checksum(gga_body().rsplit(",", 1)[0]))


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("2857.", "28x7.", "field 2 (latitude)"),
        (",N,", ",X,", "field 3 (N/S indicator)"),
        ("11852.", "1852.", "field 4 (longitude)"),
        (",4,24,", ",,24,", "field 6 (fix quality)"),
        (",4,24,", ",9,24,", "field 6 (fix quality)"),
        (",24,", ",2a,", "field 7 (satellites in use)"),
        (",0.6,", ",-0.6,", "field 8 (HDOP)"),
        ("87.0000,M", "87.0000,F", "field 10 (altitude unit)"),
        ("8.4321,M", "8.4321,", "field 12 (geoid separation unit)"),
        ("023015.00", "253015.00", "field 1 (UTC time)"),
    ],
)
def test_malformed_field_named(old: str, new: str, field: str) -> None:
    body = gga_body()
    assert old in body
    with pytest.raises(NmeaError, match=re.escape(f"malformed {field} of GGA")):
        parse_sentence(with_checksum(body.replace(old, new, 1)))


def test_minutes_of_sixty_or_more_rejected() -> None:
    body = gga_body(lat=28.0).replace("2800.00000000", "2860.00000000")
    with pytest.raises(NmeaError, match="malformed field 2"):
        parse_sentence(with_checksum(body))


def test_rmc_bad_status() -> None:
    body = "GPRMC,123519,X,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W"
    with pytest.raises(NmeaError, match=r"malformed field 2 \(status\) of RMC"):
        parse_sentence(with_checksum(body))


def test_rmc_bad_date() -> None:
    body = "GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,310294,003.1,W"
    with pytest.raises(NmeaError, match=r"malformed field 9 \(date\) of RMC"):
        parse_sentence(with_checksum(body))


def test_rtk_coordinates_keep_all_decimals() -> None:
    fix = parse_gga(with_checksum(gga_body()))
    lat_field, _ = nmea_lat(BASE_LAT)
    expected = int(lat_field[:2]) + float(lat_field[2:]) / 60.0
    assert fix.lat_deg == expected
    # 8 decimals of arc-minutes keep the position to a hundredth of a millimetre.
    assert abs(fix.lat_deg - BASE_LAT) * math.radians(1) * A < 1e-5
    assert fix.ellipsoidal_height_m == pytest.approx(87.0 + 8.4321)


def test_southern_and_western_hemispheres_negative() -> None:
    fix = parse_gga(with_checksum(gga_body(lat=-33.5, lon=-70.25)))
    assert fix.lat_deg == pytest.approx(-33.5, abs=1e-12)
    assert fix.lon_deg == pytest.approx(-70.25, abs=1e-12)


def test_gga_without_fix_has_no_position() -> None:
    fix = parse_gga(with_checksum("GPGGA,023015.00,,,,,0,00,99.99,,,,,,"))
    assert fix.fix_quality == 0
    assert fix.lat_deg is None
    assert fix.lon_deg is None
    assert fix.ellipsoidal_height_m is None
    baseline = GnssBaseline(lat_deg=BASE_LAT, lon_deg=BASE_LON, height_m=BASE_H)
    with pytest.raises(NmeaError, match="no position"):
        gga_displacement(fix, baseline)


# --- geodesy ---------------------------------------------------------------------------------


def test_ecef_on_equator_and_pole() -> None:
    assert geodetic_to_ecef(0.0, 0.0, 0.0) == pytest.approx((A, 0.0, 0.0), abs=1e-9)
    assert geodetic_to_ecef(0.0, 90.0, 100.0) == pytest.approx((0.0, A + 100.0, 0.0), abs=1e-9)
    semi_minor = A * (1 - F)
    assert semi_minor == pytest.approx(6356752.314245, abs=1e-6)
    assert geodetic_to_ecef(90.0, 0.0, 0.0) == pytest.approx((0.0, 0.0, semi_minor), abs=1e-6)
    assert WGS84_A_M == A


def test_enu_rotation_at_equator_and_pole() -> None:
    # At (0°, 0°): east is +Y, north is +Z, up is +X.
    at_origin = ecef_delta_to_enu(1.0, 2.0, 3.0, 0.0, 0.0)
    assert (at_origin.east_m, at_origin.north_m, at_origin.up_m) == pytest.approx((2, 3, 1))
    # At the North Pole on the 0° meridian: east is +Y, north is −X, up is +Z.
    at_pole = ecef_delta_to_enu(1.0, 2.0, 3.0, 90.0, 0.0)
    assert (at_pole.east_m, at_pole.north_m, at_pole.up_m) == pytest.approx((2, -1, 3))


def test_enu_rotation_is_orthonormal() -> None:
    rows = []
    for delta in np.eye(3):
        enu = ecef_delta_to_enu(*delta, BASE_LAT, BASE_LON)
        rows.append((enu.east_m, enu.north_m, enu.up_m))
    rotation = np.array(rows).T
    assert np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(rotation) == pytest.approx(1.0)


def test_small_offset_recovered() -> None:
    lat, lon, h = offset_position(east_m=0.005, north_m=0.010, up_m=-0.003)
    offset = enu_offset(BASE_LAT, BASE_LON, BASE_H, lat, lon, h)
    assert offset.east_m * 1000 == pytest.approx(5.0, abs=1e-3)
    assert offset.north_m * 1000 == pytest.approx(10.0, abs=1e-3)
    assert offset.up_m * 1000 == pytest.approx(-3.0, abs=1e-3)


@pytest.mark.parametrize(
    ("azimuth", "downstream", "axis"),
    [
        # Downstream east: the left bank looking east is north.
        (90.0, 5.0, 10.0),
        # Downstream north: the left bank is west.
        (0.0, 10.0, -5.0),
        # Downstream south-east: d = (E − N)/√2, axis (toward north-east) = (E + N)/√2.
        (135.0, (5.0 - 10.0) / math.sqrt(2), (5.0 + 10.0) / math.sqrt(2)),
    ],
)
def test_dam_components(azimuth: float, downstream: float, axis: float) -> None:
    components = dam_components(east=5.0, north=10.0, downstream_azimuth_deg=azimuth)
    assert components.downstream == pytest.approx(downstream, abs=1e-12)
    assert components.axis == pytest.approx(axis, abs=1e-12)


# --- displacement from GGA -------------------------------------------------------------------


def gga_at(east_m: float, north_m: float, up_m: float, quality: int = 4) -> GgaFix:
    lat, lon, h = offset_position(east_m, north_m, up_m)
    separation = 8.4321
    altitude = f"{h - separation:.4f}"
    return parse_gga(with_checksum(gga_body(lat=lat, lon=lon, quality=quality, altitude=altitude)))


def test_displacement_10_north_5_east_3_down() -> None:
    baseline = GnssBaseline(
        lat_deg=BASE_LAT, lon_deg=BASE_LON, height_m=BASE_H, downstream_azimuth_deg=135.0
    )
    displacement = gga_displacement(gga_at(0.005, 0.010, -0.003), baseline)
    assert displacement.east_mm == pytest.approx(5.0, abs=0.1)
    assert displacement.north_mm == pytest.approx(10.0, abs=0.1)
    assert displacement.up_mm == pytest.approx(-3.0, abs=0.1)
    assert displacement.settlement_mm == pytest.approx(3.0, abs=0.1)
    assert displacement.downstream_mm == pytest.approx(-5.0 / math.sqrt(2), abs=0.1)
    assert displacement.axis_mm == pytest.approx(15.0 / math.sqrt(2), abs=0.1)
    assert displacement.fix_quality == 4
    assert displacement.satellites == 24
    assert displacement.hdop == 0.6
    assert displacement.flags == ()


def test_no_dam_components_without_azimuth() -> None:
    baseline = GnssBaseline(lat_deg=BASE_LAT, lon_deg=BASE_LON, height_m=BASE_H)
    displacement = gga_displacement(gga_at(0.005, 0.010, -0.003), baseline)
    assert displacement.downstream_mm is None
    assert displacement.axis_mm is None
    assert displacement.north_mm == pytest.approx(10.0, abs=0.1)


def test_float_fix_flagged_but_computed() -> None:
    baseline = GnssBaseline(lat_deg=BASE_LAT, lon_deg=BASE_LON, height_m=BASE_H)
    displacement = gga_displacement(gga_at(0.005, 0.010, -0.003, quality=5), baseline)
    assert displacement.flags == ("fix_not_rtk",)
    assert displacement.fix_quality == 5
    assert displacement.east_mm == pytest.approx(5.0, abs=0.1)


def test_required_fix_quality_configurable() -> None:
    baseline = GnssBaseline(
        lat_deg=BASE_LAT, lon_deg=BASE_LON, height_m=BASE_H, required_fix_quality=(4, 5)
    )
    assert gga_displacement(gga_at(0.0, 0.0, 0.0, quality=5), baseline).flags == ()
    assert gga_displacement(gga_at(0.0, 0.0, 0.0, quality=1), baseline).flags == ("fix_not_rtk",)


@pytest.mark.parametrize(
    "config",
    [
        {"lat_deg": 91.0, "lon_deg": 0.0, "height_m": 0.0},
        {"lat_deg": 0.0, "lon_deg": 181.0, "height_m": 0.0},
        {"lat_deg": 0.0, "lon_deg": 0.0, "height_m": math.nan},
        {"lat_deg": 0.0, "lon_deg": 0.0, "height_m": 0.0, "downstream_azimuth_deg": 360.0},
        {"lat_deg": 0.0, "lon_deg": 0.0, "height_m": 0.0, "required_fix_quality": []},
        {"lat_deg": 0.0, "lon_deg": 0.0, "height_m": 0.0, "required_fix_quality": [9]},
        {"lat_deg": 0.0, "lon_deg": 0.0, "height_m": 0.0, "required_fix_quality": [0]},
        {"lat_deg": 0.0, "lon_deg": 0.0, "height": 0.0},
    ],
)
def test_bad_baseline_rejected(config: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        GnssBaseline.model_validate(config)


def test_baseline_defaults_to_rtk_fixed() -> None:
    baseline = GnssBaseline.model_validate({"lat_deg": 1.0, "lon_deg": 2.0, "height_m": 3.0})
    assert baseline.required_fix_quality == (4,)
    assert baseline.downstream_azimuth_deg is None
