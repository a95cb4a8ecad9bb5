"""The devices of a site and their points: the shape every driver reads its work from.

A device sits on a bus and is polled at its interval; each point is one value of it, with
where it is found (a Modbus register, a named group of a serial line, a GNSS value), what
it measures and how its raw number becomes an engineering value (scale, offset,
calibration, tipping-bucket counting, physical range). Which locating keys a device and
its points need depends on the type of its bus: each bus type's own check
(``BusType.check`` in drivers/bus.py) enforces that, so this model stays the same for all.
"""

from __future__ import annotations

import re
import warnings
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from drivers.registers import RegisterType, register_count
from drivers.tipping_bucket import TippingBucketCounter
from vocab.configbase import LazyType, StrictModel
from vocab.ids import Ident

if TYPE_CHECKING:
    from drivers.calibration import Calibration
    from drivers.nmea import GnssBaseline
else:
    # Sections few sites write: their modules load with their first object (vocab/configbase.py).
    Calibration = Annotated[Any, LazyType("drivers.calibration", "Calibration")]
    GnssBaseline = Annotated[Any, LazyType("drivers.nmea", "GnssBaseline")]

Quantity = Literal[
    "water_level",
    "rainfall_counter",
    "rainfall",
    "seepage_pressure",
    "piezometric_level",
    "seepage_flow",
    "weir_head",
    "displacement",
    "settlement",
    "temperature",
    "vw_frequency",
    "battery_voltage",
    "status",
    "other",
]



# pydantic warns that a field named "register" shadows ABCMeta.register; the key name is
# part of the config contract and the classmethod is never used on models.
warnings.filterwarnings("ignore", message='Field name "register"', category=UserWarning)

RegisterTable = Literal["coil", "discrete", "holding", "input"]


class RegisterConfig(StrictModel):
    table: RegisterTable
    address: int = Field(ge=0, le=65535)
    type: Literal[RegisterType, "bool"] | None = None
    word_order: Literal["big", "little"] = "big"
    byte_order: Literal["big", "little"] = "big"
    # A single bit of a status register (0 = least significant).
    bit: int | None = Field(default=None, ge=0, le=15)

    @model_validator(mode="after")
    def _type_fits_table(self) -> RegisterConfig:
        is_bit_table = self.table in ("coil", "discrete")
        if is_bit_table and self.type not in (None, "bool"):
            raise ValueError(f"a {self.table} is one bit: type must be bool, not {self.type}")
        if not is_bit_table and self.type == "bool" and self.bit is None:
            raise ValueError("type bool on a register table needs 'bit' (which bit to read)")
        if self.bit is not None and self.type not in (None, "bool", "uint16", "int16"):
            raise ValueError("'bit' reads one bit of a 16-bit register: use type uint16")
        return self

    @property
    def value_type(self) -> str:
        if self.table in ("coil", "discrete") or self.bit is not None:
            return "bool"
        return self.type or "uint16"

    @property
    def width(self) -> int:
        """Registers (or bits, for coil/discrete tables) this point occupies."""
        vt = self.value_type
        return 1 if vt == "bool" else register_count(vt)


class PointConfig(StrictModel):
    """One value of a device: where it sits in the register map and what it measures."""

    id: Ident
    # What the keeper calls it ("坝前水位", "P1 渗压计"): shown by the keeper's page in place
    # of the id. Only shown, never used to name anything.
    name: str = ""
    quantity: Quantity = "other"
    unit: str = ""
    # Modbus devices locate a point by its register; serial-line devices by a named group
    # of their line pattern, GNSS receivers by a GNSS_FIELDS name. Which one a point needs
    # depends on its device's bus, so the cross-check enforces it.
    register: RegisterConfig | None = None
    field: str | None = None
    scale: float = 1.0
    offset: float = 0.0
    # Applied after scale/offset: linear, polynomial, vibrating_wire, v_notch_weir.
    calibration: Calibration | None = None
    # The register is a tipping-bucket pulse counter: the reading becomes the rain (mm)
    # since the previous poll, with wrap-around and device resets handled.
    tipping_bucket: TippingBucketCounter | None = None
    # Physical range of the sensor; a value outside it is stored as bad, not alarmed on.
    range: tuple[float, float] | None = None

    @model_validator(mode="after")
    def _one_conversion(self) -> PointConfig:
        if self.calibration is not None and self.tipping_bucket is not None:
            raise ValueError("a point is either a calibrated sensor or a tipping-bucket "
                             "counter, not both")
        return self


class LineFormat(StrictModel):
    """What a serial-line instrument prints and, for request/response ones, what it is sent."""

    # Sent at each poll, e.g. "READ\r\n" (YAML double quotes give real CR/LF). Without a
    # command the instrument is free-running: the last matching line of each interval wins.
    command: str | None = Field(default=None, min_length=1)
    # Searched in each received line (CR, LF or CRLF ended); each point names a group.
    pattern: str

    @field_validator("pattern")
    @classmethod
    def _named_groups(cls, value: str) -> str:
        try:
            compiled = re.compile(value)
        except re.error as exc:
            raise ValueError(f"pattern is not a valid regular expression: {exc}") from None
        if not compiled.groupindex:
            raise ValueError("pattern needs named groups, e.g. (?P<level>[-+0-9.]+), "
                             "which points name with 'field'")
        return value

    @property
    def groups(self) -> list[str]:
        return list(re.compile(self.pattern).groupindex)


class DeviceConfig(StrictModel):
    id: Ident
    bus: Ident
    unit: int = Field(default=1, ge=0, le=247)
    poll_interval_s: float = Field(gt=0, le=86400)
    # Merge reads of nearby registers into one request; turn off for devices that reject
    # reads spanning unmapped registers.
    coalesce: bool = True
    max_gap: int = Field(default=10, ge=0, le=120)
    offline_after: int = Field(default=3, ge=1, le=100)
    # serial_line devices: the command and the line pattern.
    line: LineFormat | None = None
    # nmea_gnss devices: the station's surveyed position and the fix quality required.
    baseline: GnssBaseline | None = None
    points: list[PointConfig] = Field(min_length=1)


def point_key(device: DeviceConfig, point: PointConfig) -> str:
    return f"{device.id}/{point.id}"
