"""WGS-84 geodesy for GNSS dam-deformation stations (domain reference §1.3).

A monitoring station on the crest reports its position; deformation is that position minus
the station's baseline (its surveyed position at installation), expressed in the local
east-north-up frame at the baseline and then along the dam's own axes. Positions go through
ECEF rather than through differences of latitude and longitude so the result stays exact
for any offset and any latitude. CGCS2000, the frame Chinese BeiDou services publish in,
differs from WGS-84 only at the sub-millimetre level in these formulas, so one ellipsoid
serves both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

WGS84_A_M = 6_378_137.0
"""Semi-major axis of the WGS-84 ellipsoid, m."""

WGS84_F = 1.0 / 298.257223563
"""Flattening of the WGS-84 ellipsoid."""

WGS84_E2 = WGS84_F * (2.0 - WGS84_F)
"""First eccentricity squared of the WGS-84 ellipsoid."""


@dataclass(frozen=True)
class Enu:
    """A local offset in metres: east, north and up at a reference point."""

    east_m: float
    north_m: float
    up_m: float


@dataclass(frozen=True)
class DamComponents:
    """A horizontal offset resolved along the dam (§1.3), same unit as the input.

    ``downstream`` is along the river, positive downstream (顺河向); ``axis`` is along the dam
    axis, positive toward the left bank looking downstream (坝轴向).
    """

    downstream: float
    axis: float


def geodetic_to_ecef(lat_deg: float, lon_deg: float, height_m: float) -> tuple[float, float, float]:
    """ECEF X, Y, Z (m) of a WGS-84 latitude, longitude (degrees) and ellipsoidal height (m)."""
    lat = math.radians(lat_deg)
    lon = math.radians(lon_deg)
    sin_lat = math.sin(lat)
    cos_lat = math.cos(lat)
    prime_vertical_radius = WGS84_A_M / math.sqrt(1.0 - WGS84_E2 * sin_lat * sin_lat)
    x = (prime_vertical_radius + height_m) * cos_lat * math.cos(lon)
    y = (prime_vertical_radius + height_m) * cos_lat * math.sin(lon)
    z = (prime_vertical_radius * (1.0 - WGS84_E2) + height_m) * sin_lat
    return x, y, z


def ecef_delta_to_enu(dx: float, dy: float, dz: float, lat_deg: float, lon_deg: float) -> Enu:
    """Rotate an ECEF difference (m) into east, north, up at the given reference point."""
    lat = math.radians(lat_deg)
    lon = math.radians(lon_deg)
    sin_lat, cos_lat = math.sin(lat), math.cos(lat)
    sin_lon, cos_lon = math.sin(lon), math.cos(lon)
    east = -sin_lon * dx + cos_lon * dy
    north = -sin_lat * cos_lon * dx - sin_lat * sin_lon * dy + cos_lat * dz
    up = cos_lat * cos_lon * dx + cos_lat * sin_lon * dy + sin_lat * dz
    return Enu(east_m=east, north_m=north, up_m=up)


def enu_offset(
    base_lat_deg: float,
    base_lon_deg: float,
    base_height_m: float,
    lat_deg: float,
    lon_deg: float,
    height_m: float,
) -> Enu:
    """Offset (m) of a position from a baseline, in the east-north-up frame at the baseline."""
    bx, by, bz = geodetic_to_ecef(base_lat_deg, base_lon_deg, base_height_m)
    px, py, pz = geodetic_to_ecef(lat_deg, lon_deg, height_m)
    return ecef_delta_to_enu(px - bx, py - by, pz - bz, base_lat_deg, base_lon_deg)


def dam_components(east: float, north: float, downstream_azimuth_deg: float) -> DamComponents:
    """Resolve an east/north offset along the dam, given the azimuth of the downstream direction.

    Downstream d = E·sinα + N·cosα; the axis component is the same projection at α − 90°, which
    looking downstream points to the left bank.
    """
    alpha = math.radians(downstream_azimuth_deg)
    axis_direction = alpha - math.pi / 2.0
    downstream = east * math.sin(alpha) + north * math.cos(alpha)
    axis = east * math.sin(axis_direction) + north * math.cos(axis_direction)
    return DamComponents(downstream=downstream, axis=axis)
