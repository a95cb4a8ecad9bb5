"""Per-point calibration: a decoded raw number to an engineering value (domain reference §1–§2.5).

Each transform models how a real instrument's reading is turned into a quantity in practice:

- ``linear``: the ``Y = A·x + B`` scaling loggers and transmitters document (§1.1).
- ``polynomial``: a calibration-certificate polynomial.
- ``vibrating_wire``: a vibrating-wire piezometer read by a VW reader as a frequency (§1.2),
  converted with its calibration certificate (Chinese vendor 频模 form or Geokon linear or
  polynomial form), corrected for temperature and barometric pressure, and optionally turned
  into a piezometric level (§2.1).
- ``v_notch_weir``: seepage flow through a 90° Thomson V-notch weir from its weir-head gauge
  (§2.5).

A transform that needs another point of the same device (a VW gauge's thermistor, a barometer)
names it in ``companion_points()``; the caller passes those points' engineering values by id.
Calibration failures raise ``CalibrationError`` subclasses carrying the reason, so the caller
can mark the reading bad instead of publishing a made-up number.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import Field, FiniteFloat, model_validator

from vocab.configbase import StrictModel
from vocab.model import DRY

PositiveFiniteFloat = Annotated[float, Field(gt=0.0, allow_inf_nan=False)]

ZERO_READING_TOLERANCE_DIGITS = 1.0
"""How far (in frequency-modulus units) the certificate's zero may sit from its zero reading.

Certificates print coefficients to a few significant figures, so a constant worked out by hand
misses the zero reading slightly. The pressure change over one digit (about 0.05–0.1 kPa on a
typical gauge) absorbs that rounding yet still catches a constant belonging to another zero
reading, such as the factory's instead of the site's.
"""


class CalibrationError(Exception):
    """A raw value that cannot be calibrated; ``reason`` is a short code for the reading's flag."""

    reason: str = "calibration_error"


class CompanionMissing(CalibrationError):
    """A companion point's value (e.g. the VW thermistor temperature) is absent or NaN."""

    reason = "companion_missing"

    def __init__(self, point_id: str) -> None:
        super().__init__(f"companion point {point_id!r} has no valid value")
        self.point_id = point_id


class RawOutOfDomain(CalibrationError):
    """A raw value the transform cannot use: NaN or infinite, or a VW frequency ≤ 0 Hz."""

    reason = "raw_out_of_domain"

    def __init__(self, raw: float, why: str) -> None:
        super().__init__(f"raw value {raw!r} {why}")
        self.raw = raw


@dataclass(frozen=True)
class CalibrationResult:
    """An engineering value and the reasons it is qualified ("dry", "weir_below_notch").

    ``measured`` is False when the value only bounds the quantity: a dry piezometer's
    level is somewhere below the sensor, and the sensor's elevation stands in for it. The
    reading is then stored ``bad`` with the flags as its reason, so no limit or derived
    point takes it as a measurement. A weir below its notch does measure: no flow is 0 L/s.
    """

    value: float
    flags: tuple[str, ...] = ()
    measured: bool = True


def _finite_raw(raw: float) -> float:
    # A float32 register can hold NaN (some loggers' "no reading"); it must not become a value.
    if not math.isfinite(raw):
        raise RawOutOfDomain(raw, "is not a finite number")
    return raw


def _companion(companions: Mapping[str, float], point_id: str) -> float:
    value = companions.get(point_id)
    if value is None or not math.isfinite(value):
        raise CompanionMissing(point_id)
    return value


class LinearCalibration(StrictModel):
    """y = a·x + b."""

    type: Literal["linear"] = "linear"
    a: FiniteFloat
    b: FiniteFloat = 0.0

    def companion_points(self) -> tuple[str, ...]:
        return ()

    def apply(self, raw: float, companions: Mapping[str, float]) -> CalibrationResult:
        return CalibrationResult(self.a * _finite_raw(raw) + self.b)


class PolynomialCalibration(StrictModel):
    """y = c₀ + c₁·x + c₂·x² + …: ``coefficients`` are listed lowest power first.

    Lowest power first so that a list's index is the power of x, and a constant or a straight
    line reads the same as in ``linear`` (``[b, a]``).
    """

    type: Literal["polynomial"] = "polynomial"
    coefficients: tuple[FiniteFloat, ...] = Field(min_length=1)

    def companion_points(self) -> tuple[str, ...]:
        return ()

    def apply(self, raw: float, companions: Mapping[str, float]) -> CalibrationResult:
        x = _finite_raw(raw)
        value = 0.0
        for coefficient in reversed(self.coefficients):
            value = value * x + coefficient
        return CalibrationResult(value)


class ChineseVendorCertificate(StrictModel):
    """Chinese vendor form (§1.2): P = k·(F − F₀) in kPa, F = f²/1000 (频模).

    ``difference`` is written as on the certificate: some give a negative k with (F − F₀),
    others a positive k with (F₀ − F). Either way the validation checks that pressure rises
    as the frequency falls.
    """

    form: Literal["chinese_vendor"] = "chinese_vendor"
    k_kpa_per_f: FiniteFloat
    zero_modulus_f: PositiveFiniteFloat
    difference: Literal["F-F0", "F0-F"] = "F-F0"

    @property
    def zero_modulus(self) -> float:
        return self.zero_modulus_f

    def pressure_kpa(self, modulus: float) -> float:
        if self.difference == "F-F0":
            return self.k_kpa_per_f * (modulus - self.zero_modulus_f)
        return self.k_kpa_per_f * (self.zero_modulus_f - modulus)

    def slope_at_zero(self) -> float:
        """dP/dF at the zero reading, kPa per modulus unit."""
        return self.k_kpa_per_f if self.difference == "F-F0" else -self.k_kpa_per_f


class GeokonLinearCertificate(StrictModel):
    """Geokon linear form (§1.2): P = G·(R₁ − R₀), R in digits (= f²/1000), G in kPa/digit."""

    form: Literal["geokon_linear"] = "geokon_linear"
    gauge_factor_kpa_per_digit: FiniteFloat
    zero_reading_digits: PositiveFiniteFloat

    @property
    def zero_modulus(self) -> float:
        return self.zero_reading_digits

    def pressure_kpa(self, modulus: float) -> float:
        return self.gauge_factor_kpa_per_digit * (modulus - self.zero_reading_digits)

    def slope_at_zero(self) -> float:
        return self.gauge_factor_kpa_per_digit


class GeokonPolynomialCertificate(StrictModel):
    """Geokon polynomial form (§1.2): P = A·R₁² + B·R₁ + C, R in digits (= f²/1000).

    When ``c`` is not given it is taken from the site zero reading, C = −(A·R₀² + B·R₀), as the
    Geokon manual instructs; a given ``c`` must agree with the zero reading.
    """

    form: Literal["geokon_polynomial"] = "geokon_polynomial"
    a: FiniteFloat
    b: FiniteFloat
    c: FiniteFloat | None = None
    zero_reading_digits: PositiveFiniteFloat

    @property
    def zero_modulus(self) -> float:
        return self.zero_reading_digits

    @property
    def constant(self) -> float:
        if self.c is not None:
            return self.c
        r0 = self.zero_reading_digits
        return -(self.a * r0 * r0 + self.b * r0)

    def pressure_kpa(self, modulus: float) -> float:
        return (self.a * modulus + self.b) * modulus + self.constant

    def slope_at_zero(self) -> float:
        return 2.0 * self.a * self.zero_reading_digits + self.b


VibratingWireCertificate = Annotated[
    ChineseVendorCertificate | GeokonLinearCertificate | GeokonPolynomialCertificate,
    Field(discriminator="form"),
]


class VibratingWireCalibration(StrictModel):
    """Vibrating-wire piezometer: frequency (Hz) → pressure (kPa) or piezometric level (m).

    P = certificate(F) + thermal·(T − T₀) + (Q₀ − Q), with T from the ``temperature_point``
    companion (°C) and Q from the ``barometer_point`` companion (kPa, unvented gauges only).
    The thermal term is the vendor form's b·(T − T₀) and Geokon's K·(T₁ − T₀); the barometric
    term is the vendor form's (Q₀ − Q) and Geokon's −(S₁ − S₀).

    With ``output: head_m`` the value is the piezometric level H_p = z_install + P/g (§2.1). At
    or below ``dry_threshold_kpa`` the sensor is flagged "dry" (water below the sensor): the
    level is then z_install, never above it, while ``pressure_kpa`` output keeps the measured
    pressure so the reading stays traceable. Either way a dry value is not a measurement of
    the water (``CalibrationResult.measured`` is False).
    """

    type: Literal["vibrating_wire"] = "vibrating_wire"
    certificate: VibratingWireCertificate
    temperature_point: str | None = None
    thermal_factor_kpa_per_c: FiniteFloat = 0.0
    zero_temperature_c: FiniteFloat | None = None
    barometer_point: str | None = None
    zero_barometric_kpa: FiniteFloat | None = None
    output: Literal["pressure_kpa", "head_m"] = "pressure_kpa"
    install_elevation_m: FiniteFloat | None = None
    g_kpa_per_m: PositiveFiniteFloat = 9.81
    dry_threshold_kpa: FiniteFloat = 0.0

    @model_validator(mode="after")
    def _check_consistency(self) -> VibratingWireCalibration:
        if self.thermal_factor_kpa_per_c != 0.0 and self.temperature_point is None:
            raise ValueError(
                "thermal_factor_kpa_per_c is set but temperature_point is not: name the "
                "thermistor point, or set the factor to 0 to run without temperature correction"
            )
        if self.temperature_point is not None and self.thermal_factor_kpa_per_c == 0.0:
            raise ValueError(
                "temperature_point is set but thermal_factor_kpa_per_c is 0: the temperature "
                "would not be used; give the certificate's thermal factor or drop the point"
            )
        if self.temperature_point is not None and self.zero_temperature_c is None:
            raise ValueError("temperature_point needs zero_temperature_c (T₀ at installation)")
        if (self.barometer_point is None) != (self.zero_barometric_kpa is None):
            raise ValueError(
                "barometer_point and zero_barometric_kpa (Q₀ at installation) go together"
            )
        if self.output == "head_m" and self.install_elevation_m is None:
            raise ValueError("output head_m needs install_elevation_m (sensor elevation, m)")
        self._check_certificate_sanity()
        return self

    def _check_certificate_sanity(self) -> None:
        # §1.2: sign conventions vary between certificates, so the formula as written is checked
        # for the two properties every correct one has.
        certificate = self.certificate
        slope = certificate.slope_at_zero()
        if not slope < 0.0:
            raise ValueError(
                f"{certificate.form} certificate gives dP/dF = {slope:g} kPa per unit at the zero "
                "reading; a lower frequency must give a higher pressure, so the slope must be "
                "negative. Check the sign of the factor (or `difference` on a vendor form)."
            )
        zero_pressure = certificate.pressure_kpa(certificate.zero_modulus)
        tolerance = abs(slope) * ZERO_READING_TOLERANCE_DIGITS
        if abs(zero_pressure) > tolerance:
            raise ValueError(
                f"{certificate.form} certificate gives {zero_pressure:g} kPa at its zero reading "
                f"{certificate.zero_modulus:g}; it must give 0 kPa (within {tolerance:g} kPa). "
                "Check the constant against the zero reading, or leave it out to derive it."
            )

    def companion_points(self) -> tuple[str, ...]:
        return tuple(
            point for point in (self.temperature_point, self.barometer_point) if point is not None
        )

    def pressure_kpa(self, frequency_hz: float, companions: Mapping[str, float]) -> float:
        """Corrected pressure (kPa) for a wire frequency, before any dry handling."""
        frequency = _finite_raw(frequency_hz)
        if frequency <= 0.0:
            # Readers report 0 Hz when the wire does not ring (broken cable, dead gauge); taken
            # literally it would be a huge pressure.
            raise RawOutOfDomain(frequency_hz, "is not a wire frequency (must be > 0 Hz)")
        modulus = frequency * frequency / 1000.0
        pressure = self.certificate.pressure_kpa(modulus)
        if self.temperature_point is not None and self.zero_temperature_c is not None:
            temperature = _companion(companions, self.temperature_point)
            pressure += self.thermal_factor_kpa_per_c * (temperature - self.zero_temperature_c)
        if self.barometer_point is not None and self.zero_barometric_kpa is not None:
            barometric = _companion(companions, self.barometer_point)
            pressure += self.zero_barometric_kpa - barometric
        return pressure

    def apply(self, raw: float, companions: Mapping[str, float]) -> CalibrationResult:
        pressure = self.pressure_kpa(raw, companions)
        dry = pressure <= self.dry_threshold_kpa
        flags = (DRY,) if dry else ()
        elevation = self.install_elevation_m
        # head_m without an elevation is rejected at validation.
        if self.output == "pressure_kpa" or elevation is None:
            return CalibrationResult(pressure, flags, measured=not dry)
        if dry:
            return CalibrationResult(elevation, flags, measured=False)
        return CalibrationResult(elevation + pressure / self.g_kpa_per_m, flags)


class VNotchWeirCalibration(StrictModel):
    """90° V-notch (Thomson) weir: Q = coefficient·H^2.5, H = reading − notch zero (§2.5).

    ``notch_zero`` is the weir-head gauge's own reading with the water level at the notch
    vertex, in the gauge's ``reading_unit``. The default coefficient 1.4 (m³/s with H in m) is
    the customary Chinese value; ``output`` defaults to L/s, the unit seepage flow is reported in.
    At H ≤ 0 no water flows over the notch: Q = 0, flagged "weir_below_notch".
    """

    type: Literal["v_notch_weir"] = "v_notch_weir"
    notch_zero: FiniteFloat
    reading_unit: Literal["m", "mm"] = "m"
    coefficient: PositiveFiniteFloat = 1.4
    output: Literal["l_per_s", "m3_per_s"] = "l_per_s"

    def companion_points(self) -> tuple[str, ...]:
        return ()

    def head_m(self, raw: float) -> float:
        """Head over the notch vertex, m."""
        head = _finite_raw(raw) - self.notch_zero
        return head / 1000.0 if self.reading_unit == "mm" else head

    def apply(self, raw: float, companions: Mapping[str, float]) -> CalibrationResult:
        head = self.head_m(raw)
        if head <= 0.0:
            return CalibrationResult(0.0, ("weir_below_notch",))
        flow_m3_per_s = self.coefficient * head**2.5
        if self.output == "l_per_s":
            return CalibrationResult(flow_m3_per_s * 1000.0)
        return CalibrationResult(flow_m3_per_s)


Calibration = Annotated[
    LinearCalibration | PolynomialCalibration | VibratingWireCalibration | VNotchWeirCalibration,
    Field(discriminator="type"),
]
"""Any point calibration, chosen by its ``type`` key."""
