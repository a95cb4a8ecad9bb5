"""Calibration transforms against hand-computed values (reference §1.2, §2.1, §2.5)."""

from __future__ import annotations

import math

import pytest
from pydantic import TypeAdapter, ValidationError

from drivers.calibration import (
    Calibration,
    CalibrationError,
    CalibrationResult,
    ChineseVendorCertificate,
    CompanionMissing,
    GeokonLinearCertificate,
    GeokonPolynomialCertificate,
    LinearCalibration,
    PolynomialCalibration,
    RawOutOfDomain,
    VibratingWireCalibration,
    VNotchWeirCalibration,
)

CALIBRATION = TypeAdapter(Calibration)

# A vendor certificate: zero reading 2800 Hz (F0 = 7840), k = −0.1330 kPa/F with (F − F0).
VENDOR_CERTIFICATE = {"form": "chinese_vendor", "k_kpa_per_f": -0.1330, "zero_modulus_f": 7840.0}


def vw(**overrides: object) -> VibratingWireCalibration:
    config: dict[str, object] = {"type": "vibrating_wire", "certificate": VENDOR_CERTIFICATE}
    config.update(overrides)
    result = CALIBRATION.validate_python(config)
    assert isinstance(result, VibratingWireCalibration)
    return result


# --- linear and polynomial -------------------------------------------------------------------


def test_linear_scales_and_offsets() -> None:
    calibration = CALIBRATION.validate_python({"type": "linear", "a": 0.01, "b": -5.0})
    assert isinstance(calibration, LinearCalibration)
    assert calibration.apply(1234.0, {}) == CalibrationResult(pytest.approx(7.34), ())
    assert calibration.companion_points() == ()


def test_linear_offset_defaults_to_zero() -> None:
    assert LinearCalibration(a=2.5).apply(4.0, {}).value == 10.0


def test_polynomial_is_lowest_power_first() -> None:
    calibration = CALIBRATION.validate_python({"type": "polynomial", "coefficients": [1, 2, 3]})
    assert isinstance(calibration, PolynomialCalibration)
    # 1 + 2·2 + 3·2² = 17; highest-first would give 3 + 4 + 4 = 11.
    assert calibration.apply(2.0, {}).value == 17.0


def test_polynomial_matches_direct_evaluation() -> None:
    coefficients = [0.35, -1.2e-2, 4.0e-5, -2.5e-8]
    x = 812.5
    expected = sum(c * x**power for power, c in enumerate(coefficients))
    result = PolynomialCalibration(coefficients=tuple(coefficients)).apply(x, {})
    assert result.value == pytest.approx(expected, rel=1e-12)


def test_polynomial_constant() -> None:
    assert PolynomialCalibration(coefficients=(4.2,)).apply(1e6, {}).value == 4.2


def test_polynomial_needs_coefficients() -> None:
    with pytest.raises(ValidationError, match="at least 1"):
        CALIBRATION.validate_python({"type": "polynomial", "coefficients": []})


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_coefficient_rejected(bad: float) -> None:
    with pytest.raises(ValidationError):
        CALIBRATION.validate_python({"type": "polynomial", "coefficients": [1.0, bad]})


@pytest.mark.parametrize("raw", [math.nan, math.inf, -math.inf])
def test_non_finite_raw_is_a_calibration_error(raw: float) -> None:
    with pytest.raises(RawOutOfDomain):
        LinearCalibration(a=1.0).apply(raw, {})
    with pytest.raises(RawOutOfDomain):
        PolynomialCalibration(coefficients=(0.0, 1.0)).apply(raw, {})


# --- discriminated union ---------------------------------------------------------------------


def test_unknown_type_rejected() -> None:
    with pytest.raises(ValidationError):
        CALIBRATION.validate_python({"type": "cubic_spline", "a": 1.0})


def test_missing_type_rejected() -> None:
    with pytest.raises(ValidationError):
        CALIBRATION.validate_python({"a": 1.0})


def test_unknown_key_rejected() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        CALIBRATION.validate_python({"type": "linear", "a": 1.0, "offest": 2.0})


def test_config_is_frozen() -> None:
    calibration = LinearCalibration(a=1.0)
    with pytest.raises(ValidationError):
        calibration.a = 2.0  # type: ignore[misc]


# --- vibrating wire: certificate forms -------------------------------------------------------


def test_vendor_form_pressure() -> None:
    f = 2500.0
    expected = -0.1330 * (f * f / 1000.0 - 7840.0)
    assert expected == pytest.approx(211.47)
    result = vw().apply(f, {})
    assert result.value == pytest.approx(expected, rel=1e-12)
    assert result.flags == ()


def test_vendor_form_with_reversed_difference_gives_same_pressure() -> None:
    reversed_form = {**VENDOR_CERTIFICATE, "k_kpa_per_f": 0.1330, "difference": "F0-F"}
    assert vw(certificate=reversed_form).apply(2500.0, {}).value == pytest.approx(211.47)


def test_zero_reading_gives_zero_pressure() -> None:
    calibration = vw(output="pressure_kpa", dry_threshold_kpa=-1.0)
    assert calibration.apply(2800.0, {}).value == pytest.approx(0.0, abs=1e-9)


def test_vendor_form_thermal_and_barometric_terms() -> None:
    calibration = vw(
        temperature_point="T1",
        thermal_factor_kpa_per_c=0.05,
        zero_temperature_c=20.0,
        barometer_point="baro",
        zero_barometric_kpa=101.3,
    )
    f, temperature, barometric = 2500.0, 15.0, 100.8
    expected = -0.1330 * (f * f / 1000.0 - 7840.0) + 0.05 * (temperature - 20.0)
    expected += 101.3 - barometric
    assert expected == pytest.approx(211.72)
    result = calibration.apply(f, {"T1": temperature, "baro": barometric})
    assert result.value == pytest.approx(expected, rel=1e-12)
    assert calibration.companion_points() == ("T1", "baro")


def test_geokon_linear_form() -> None:
    certificate = {
        "form": "geokon_linear",
        "gauge_factor_kpa_per_digit": -0.05,
        "zero_reading_digits": 8500.0,
    }
    calibration = vw(
        certificate=certificate,
        temperature_point="therm",
        thermal_factor_kpa_per_c=0.02,
        zero_temperature_c=18.5,
    )
    assert isinstance(calibration.certificate, GeokonLinearCertificate)
    # R1 = 2700²/1000 = 7290 digits; −0.05·(7290 − 8500) + 0.02·(12 − 18.5) = 60.5 − 0.13
    result = calibration.apply(2700.0, {"therm": 12.0})
    assert result.value == pytest.approx(60.37, rel=1e-12)


def test_geokon_polynomial_derives_constant_from_zero_reading() -> None:
    a, b, r0 = -2.0e-7, -0.045, 8500.0
    certificate = {"form": "geokon_polynomial", "a": a, "b": b, "zero_reading_digits": r0}
    calibration = vw(certificate=certificate)
    assert isinstance(calibration.certificate, GeokonPolynomialCertificate)
    c = -(a * r0**2 + b * r0)
    assert c == pytest.approx(396.95)
    r1 = 2700.0**2 / 1000.0
    expected = a * r1**2 + b * r1 + c
    assert expected == pytest.approx(58.27118)
    assert calibration.apply(2700.0, {}).value == pytest.approx(expected, rel=1e-12)


def test_geokon_polynomial_accepts_a_consistent_constant() -> None:
    certificate = {
        "form": "geokon_polynomial",
        "a": -2.0e-7,
        "b": -0.045,
        "c": 396.95,
        "zero_reading_digits": 8500.0,
    }
    assert vw(certificate=certificate).apply(2700.0, {}).value == pytest.approx(58.27118)


# --- vibrating wire: the reference's sanity rule ---------------------------------------------


@pytest.mark.parametrize(
    "certificate",
    [
        # Positive k with (F − F0): pressure would fall as the frequency falls.
        {"form": "chinese_vendor", "k_kpa_per_f": 0.1330, "zero_modulus_f": 7840.0},
        # Negative k with (F0 − F): the same mistake the other way round.
        {
            "form": "chinese_vendor",
            "k_kpa_per_f": -0.1330,
            "zero_modulus_f": 7840.0,
            "difference": "F0-F",
        },
        {"form": "geokon_linear", "gauge_factor_kpa_per_digit": 0.05, "zero_reading_digits": 8500},
        # dP/dR at R0 = 2·1e-5·8500 − 0.045 = 0.125 > 0.
        {"form": "geokon_polynomial", "a": 1.0e-5, "b": -0.045, "zero_reading_digits": 8500.0},
    ],
)
def test_certificate_with_wrong_sign_rejected(certificate: dict[str, object]) -> None:
    with pytest.raises(ValidationError, match="lower frequency must give a higher pressure"):
        vw(certificate=certificate)


def test_certificate_constant_not_matching_zero_reading_rejected() -> None:
    # C = 398 gives 1.05 kPa at R0, more than the 0.0484 kPa one digit is worth there.
    certificate = {
        "form": "geokon_polynomial",
        "a": -2.0e-7,
        "b": -0.045,
        "c": 398.0,
        "zero_reading_digits": 8500.0,
    }
    with pytest.raises(ValidationError, match="must give 0 kPa"):
        vw(certificate=certificate)


def test_zero_factor_rejected() -> None:
    with pytest.raises(ValidationError, match="must be negative"):
        vw(certificate={**VENDOR_CERTIFICATE, "k_kpa_per_f": 0.0})


def test_certificate_unknown_form_rejected() -> None:
    with pytest.raises(ValidationError):
        vw(certificate={"form": "roctest", "k_kpa_per_f": -0.1, "zero_modulus_f": 7000.0})


def test_certificate_models_usable_directly() -> None:
    certificate = ChineseVendorCertificate(k_kpa_per_f=-0.1330, zero_modulus_f=7840.0)
    calibration = VibratingWireCalibration(certificate=certificate)
    assert calibration.apply(2500.0, {}).value == pytest.approx(211.47)


# --- vibrating wire: head, dry sensor, companions --------------------------------------------


def test_piezometric_level() -> None:
    calibration = vw(output="head_m", install_elevation_m=100.0)
    pressure = -0.1330 * (2500.0**2 / 1000.0 - 7840.0)
    assert calibration.apply(2500.0, {}).value == pytest.approx(100.0 + pressure / 9.81)
    assert calibration.apply(2500.0, {}).value == pytest.approx(121.5566, abs=1e-4)


def test_water_density_factor_configurable() -> None:
    calibration = vw(output="head_m", install_elevation_m=100.0, g_kpa_per_m=9.80665)
    assert calibration.apply(2500.0, {}).value == pytest.approx(100.0 + 211.47 / 9.80665)


@pytest.mark.parametrize("g", [0.0, -9.81])
def test_non_positive_density_factor_rejected(g: float) -> None:
    with pytest.raises(ValidationError):
        vw(output="head_m", install_elevation_m=100.0, g_kpa_per_m=g)


def test_head_output_needs_install_elevation() -> None:
    with pytest.raises(ValidationError, match="install_elevation_m"):
        vw(output="head_m")


def test_dry_sensor_level_is_install_elevation() -> None:
    calibration = vw(output="head_m", install_elevation_m=100.0)
    # 2810 Hz is above the 2800 Hz zero: negative pressure, water below the sensor.
    result = calibration.apply(2810.0, {})
    assert result == CalibrationResult(100.0, ("dry",), measured=False)


def test_dry_at_exactly_zero_pressure() -> None:
    result = vw(output="head_m", install_elevation_m=100.0).apply(2800.0, {})
    assert result == CalibrationResult(100.0, ("dry",), measured=False)


def test_dry_threshold_never_lets_level_exceed_install_elevation() -> None:
    calibration = vw(output="head_m", install_elevation_m=100.0, dry_threshold_kpa=0.5)
    # F = 7838 → P = 0.266 kPa: positive, but within the threshold.
    f = math.sqrt(7838.0 * 1000.0)
    assert calibration.apply(f, {}) == CalibrationResult(100.0, ("dry",), measured=False)
    wet = calibration.apply(2500.0, {})
    assert wet.flags == () and wet.measured
    assert wet.value > 100.0


def test_dry_pressure_output_keeps_measured_pressure() -> None:
    result = vw().apply(2810.0, {})
    expected = -0.1330 * (2810.0**2 / 1000.0 - 7840.0)
    assert expected < 0
    assert result.value == pytest.approx(expected)
    assert result.flags == ("dry",)
    assert not result.measured  # a pressure at or below zero does not measure the water


def test_temperature_companion_missing() -> None:
    calibration = vw(temperature_point="T1", thermal_factor_kpa_per_c=0.05, zero_temperature_c=20)
    with pytest.raises(CompanionMissing) as info:
        calibration.apply(2500.0, {})
    assert info.value.point_id == "T1"
    assert info.value.reason == "companion_missing"


def test_temperature_companion_nan_is_missing() -> None:
    calibration = vw(temperature_point="T1", thermal_factor_kpa_per_c=0.05, zero_temperature_c=20)
    with pytest.raises(CompanionMissing, match="T1"):
        calibration.apply(2500.0, {"T1": math.nan})


def test_barometer_companion_missing() -> None:
    calibration = vw(barometer_point="baro", zero_barometric_kpa=101.3)
    with pytest.raises(CompanionMissing) as info:
        calibration.apply(2500.0, {"T1": 20.0})
    assert info.value.point_id == "baro"


def test_no_companions_by_default() -> None:
    assert vw().companion_points() == ()


@pytest.mark.parametrize("frequency", [0.0, -1256.9, math.nan])
def test_wire_that_does_not_ring_is_a_calibration_error(frequency: float) -> None:
    with pytest.raises(CalibrationError):
        vw().apply(frequency, {})


def test_reader_frequency_from_reference_register() -> None:
    # §1.1: a VTN4-16 register 0x3119 in 0.1 Hz is 1256.9 Hz.
    f = 0x3119 / 10.0
    assert f == 1256.9
    expected = -0.1330 * (f * f / 1000.0 - 7840.0)
    assert vw().apply(f, {}).value == pytest.approx(expected)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"thermal_factor_kpa_per_c": 0.05}, "temperature_point"),
        ({"temperature_point": "T1", "zero_temperature_c": 20.0}, "would not be used"),
        ({"temperature_point": "T1", "thermal_factor_kpa_per_c": 0.05}, "zero_temperature_c"),
        ({"barometer_point": "baro"}, "go together"),
        ({"zero_barometric_kpa": 101.3}, "go together"),
    ],
)
def test_inconsistent_companion_config_rejected(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        vw(**overrides)


# --- V-notch weir ----------------------------------------------------------------------------


def test_v_notch_flow_in_litres_per_second() -> None:
    calibration = CALIBRATION.validate_python({"type": "v_notch_weir", "notch_zero": 0.120})
    assert isinstance(calibration, VNotchWeirCalibration)
    head = 0.220 - 0.120
    expected = 1.4 * head**2.5 * 1000.0
    assert expected == pytest.approx(4.4272, abs=1e-4)
    assert calibration.apply(0.220, {}) == CalibrationResult(pytest.approx(expected), ())


def test_v_notch_flow_in_cubic_metres_per_second() -> None:
    calibration = VNotchWeirCalibration(notch_zero=0.0, output="m3_per_s")
    assert calibration.apply(0.05, {}).value == pytest.approx(1.4 * 0.05**2.5)


def test_v_notch_gauge_reading_in_millimetres() -> None:
    calibration = VNotchWeirCalibration(notch_zero=120.0, reading_unit="mm")
    assert calibration.apply(220.0, {}).value == pytest.approx(1.4 * 0.1**2.5 * 1000.0)


def test_v_notch_custom_coefficient() -> None:
    calibration = VNotchWeirCalibration(notch_zero=0.0, coefficient=1.37)
    assert calibration.apply(0.1, {}).value == pytest.approx(1.37 * 0.1**2.5 * 1000.0)


@pytest.mark.parametrize("reading", [0.120, 0.100])
def test_v_notch_at_or_below_notch_is_zero_and_flagged(reading: float) -> None:
    result = VNotchWeirCalibration(notch_zero=0.120).apply(reading, {})
    assert result == CalibrationResult(0.0, ("weir_below_notch",))
    assert result.measured  # no flow over the notch is a measured 0 L/s


def test_v_notch_non_positive_coefficient_rejected() -> None:
    with pytest.raises(ValidationError):
        VNotchWeirCalibration(notch_zero=0.1, coefficient=0.0)


# --- a dry piezometer beside a wet one, as the device's readings ------------------------------


def test_a_dry_piezometer_beside_a_wet_one_is_bad_with_its_reason() -> None:
    # Two piezometers of one reader, certificate zero 2800 Hz (F0 = 7840, k = −0.1330).
    # P1 rings at 2500 Hz: F = 6250, P = −0.1330·(6250 − 7840) = 211.47 kPa, so its level is
    # 100.0 + 211.47/9.81 = 121.5566 m. P2 rings at 2810 Hz: F = 7896.1, P = −7.461 kPa,
    # water below the sensor: its value stays the sensor's elevation 98.0 m, for the record,
    # but the reading is bad ("dry") and no range is applied to it.
    from drivers.decode import DeviceConversions
    from drivers.devices import DeviceConfig
    from vocab.model import Reading

    def piezo(point_id: str, address: int, elevation: float) -> dict[str, object]:
        return {"id": point_id, "quantity": "piezometric_level", "unit": "m",
                "range": [99.0, 130.0],  # P2's 98.0 m would be out of it, were it a level
                "register": {"table": "input", "address": address, "type": "uint16"},
                "calibration": {"type": "vibrating_wire", "certificate": VENDOR_CERTIFICATE,
                                "output": "head_m", "install_elevation_m": elevation}}

    device = DeviceConfig.model_validate({
        "id": "vw-1", "bus": "rs485", "unit": 1, "poll_interval_s": 600,
        "points": [piezo("p1", 0, 100.0), piezo("p2", 1, 98.0)]})
    raw = [Reading("vw-1", "p1", 0, 2500.0, "m", "good", 2500.0),
           Reading("vw-1", "p2", 0, 2810.0, "m", "good", 2810.0)]
    wet, dry = DeviceConversions(device).apply(raw)
    assert (wet.quality, wet.reason) == ("good", None)
    assert wet.value == pytest.approx(100.0 + 211.47 / 9.81) == pytest.approx(121.5566, abs=1e-4)
    assert (dry.quality, dry.value, dry.reason, dry.raw) == ("bad", 98.0, "dry", 2810.0)
    assert dry.dry and not wet.dry
