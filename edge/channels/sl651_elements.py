"""SL 651-2014 elements (§6.6.3, table 26, annex C): identifiers, N(x,y) formats, mnemonics.

The table of every element a reservoir station may send; encoding and decoding values are
edge/channels/sl651_values.py. Conventions: edge/channels/sl651_codec.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Literal, TypeAlias

from edge.channels.sl651_codec import EncodeError, check_range

# --- Elements (§6.6.3, table 26, annex C) -------------------------------------------------

ElementKind = Literal["number", "rain5", "level5", "status", "timestep", "raw"]
Rain5: TypeAlias = tuple[float | None, ...]
ElementData: TypeAlias = float | int | Rain5 | timedelta | bytes | None


@dataclass(frozen=True, slots=True)
class ElementDef:
    """One element of table C.1, or a user-defined FFxxH element with its own N(x,y).

    ``digits`` and ``decimals`` are the x and y of N(x,y): x digits in all, y of them after
    the (omitted) decimal point. ``alt_decimals`` lists other decimal counts the standard
    allows for the element (levels: "保留2～3位小数", tables E.3, E.5, E.6).
    """

    identifier: int
    mnemonic: str
    name: str
    unit: str
    digits: int = 0
    decimals: int = 0
    kind: ElementKind = "number"
    alt_decimals: tuple[int, ...] = ()

    @property
    def identifier_bytes(self) -> bytes:
        return self.identifier.to_bytes(2 if self.identifier > 0xFF else 1, "big")

    @property
    def label(self) -> str:
        return f"{self.mnemonic} ({self.identifier:02X}H)"

    @property
    def n(self) -> str:
        return f"N({self.digits},{self.decimals})" if self.decimals else f"N({self.digits})"

    @classmethod
    def user_defined(cls, identifier: int, mnemonic: str, digits: int, decimals: int,
                     unit: str = "", name: str = "") -> ElementDef:
        """A user-defined element (table C.1 row 133: FFxxH, "用户自定义扩展区").

        A centre only knows what it means from an agreement with the site, so the caller
        gives its N(x,y) explicitly.
        """
        check_range("user-defined identifier", identifier, 0xFF00, 0xFFFE)
        check_range(f"{mnemonic} digits", digits, 1, 60)
        check_range(f"{mnemonic} decimals", decimals, 0, min(7, digits))
        if not mnemonic:
            raise EncodeError("a user-defined element needs a mnemonic")
        return cls(identifier, mnemonic, name or f"user-defined {identifier:04X}H", unit,
                   digits, decimals)


def _n(identifier: int, mnemonic: str, name: str, unit: str, digits: int, decimals: int,
       alt: tuple[int, ...] = ()) -> ElementDef:
    return ElementDef(identifier, mnemonic, name, unit, digits, decimals, "number", alt)


# Identifiers, mnemonics and N(x,y) as table C.1 gives them.
ELEMENTS: tuple[ElementDef, ...] = (
    ElementDef(0x04, "DRxnn", "time step code (时间步长码) DDHHMM", "", 6, 0, "timestep"),
    _n(0x05, "DT", "period length, hours.minutes (时段长)", "h.min", 4, 2),
    _n(0x01, "AC", "cross-section area", "m²", 8, 2),
    _n(0x02, "AI", "air temperature", "°C", 3, 1),
    _n(0x03, "C", "water temperature", "°C", 3, 1),
    _n(0x06, "ED", "daily evaporation", "mm", 5, 1),
    _n(0x07, "EJ", "current evaporation", "mm", 5, 1),
    _n(0x08, "FL", "air pressure", "hPa", 5, 0),
    _n(0x09, "GH", "gate opening height", "m", 5, 2),
    _n(0x0A, "GN", "outlet works or gate (group) number", "", 3, 0),
    _n(0x0B, "GS", "outlet works type", "", 1, 0),
    _n(0x0C, "GT", "number of gates open", "", 3, 0),
    _n(0x0D, "GTP", "ground temperature", "°C", 3, 1),
    _n(0x0E, "H", "groundwater depth", "m", 6, 2),
    _n(0x0F, "HW", "wave height", "m", 5, 2),
    _n(0x10, "M10", "soil moisture at 10 cm", "%", 4, 1),
    _n(0x11, "M20", "soil moisture at 20 cm", "%", 4, 1),
    _n(0x12, "M30", "soil moisture at 30 cm", "%", 4, 1),
    _n(0x13, "M40", "soil moisture at 40 cm", "%", 4, 1),
    _n(0x14, "M50", "soil moisture at 50 cm", "%", 4, 1),
    _n(0x15, "M60", "soil moisture at 60 cm", "%", 4, 1),
    _n(0x16, "M80", "soil moisture at 80 cm", "%", 4, 1),
    _n(0x17, "M100", "soil moisture at 100 cm", "%", 4, 1),
    _n(0x18, "MST", "humidity", "%", 4, 1),
    _n(0x19, "NS", "pumps running", "", 2, 0),
    _n(0x1A, "P1", "1-hour rainfall", "mm", 5, 1),
    _n(0x1B, "P2", "2-hour rainfall", "mm", 5, 1),
    _n(0x1C, "P3", "3-hour rainfall", "mm", 5, 1),
    _n(0x1D, "P6", "6-hour rainfall", "mm", 5, 1),
    _n(0x1E, "P12", "12-hour rainfall", "mm", 5, 1),
    _n(0x1F, "PD", "daily rainfall", "mm", 5, 1),
    _n(0x20, "PJ", "current rainfall", "mm", 5, 1),
    _n(0x21, "PN01", "1-minute rainfall", "mm", 5, 1),
    _n(0x22, "PN05", "5-minute rainfall", "mm", 5, 1),
    _n(0x23, "PN10", "10-minute rainfall", "mm", 5, 1),
    _n(0x24, "PN30", "30-minute rainfall", "mm", 5, 1),
    _n(0x25, "PR", "storm rainfall", "mm", 5, 1),
    _n(0x26, "PT", "cumulative rainfall", "mm", 6, 1),
    _n(0x27, "Q", "instantaneous or pumped discharge", "m³/s", 9, 3),
    _n(0x28, "Q1", "intake/outfall discharge 1", "m³/s", 9, 3),
    _n(0x29, "Q2", "intake/outfall discharge 2", "m³/s", 9, 3),
    _n(0x2A, "Q3", "intake/outfall discharge 3", "m³/s", 9, 3),
    _n(0x2B, "Q4", "intake/outfall discharge 4", "m³/s", 9, 3),
    _n(0x2C, "Q5", "intake/outfall discharge 5", "m³/s", 9, 3),
    _n(0x2D, "Q6", "intake/outfall discharge 6", "m³/s", 9, 3),
    _n(0x2E, "Q7", "intake/outfall discharge 7", "m³/s", 9, 3),
    _n(0x2F, "Q8", "intake/outfall discharge 8", "m³/s", 9, 3),
    _n(0x30, "QA", "total outflow", "m³/s", 9, 3),
    _n(0x31, "QZ", "outlet works or gate (group) discharge", "m³/s", 9, 3),
    _n(0x32, "SW", "sediment discharge", "10⁴ t", 11, 3),
    _n(0x33, "UC", "wind direction", "", 2, 0),
    _n(0x34, "UE", "wind force (Beaufort)", "", 2, 0),
    _n(0x35, "US", "wind speed", "m/s", 4, 1),
    _n(0x36, "VA", "mean cross-section velocity", "m/s", 5, 3),
    _n(0x37, "VJ", "current velocity", "m/s", 5, 3),
    _n(0x38, "VT", "supply voltage", "V", 4, 2),
    _n(0x39, "Z", "water level (river, tide)", "m", 7, 3, alt=(2,)),
    _n(0x3A, "ZB", "downstream level (reservoir, sluice, station)", "m", 7, 3, alt=(2,)),
    _n(0x3B, "ZU", "upstream level (reservoir, sluice, station)", "m", 7, 3, alt=(2,)),
    _n(0x3C, "Z1", "intake/outfall level 1", "m", 7, 3),
    _n(0x3D, "Z2", "intake/outfall level 2", "m", 7, 3),
    _n(0x3E, "Z3", "intake/outfall level 3", "m", 7, 3),
    _n(0x3F, "Z4", "intake/outfall level 4", "m", 7, 3),
    _n(0x40, "Z5", "intake/outfall level 5", "m", 7, 3),
    _n(0x41, "Z6", "intake/outfall level 6", "m", 7, 3),
    _n(0x42, "Z7", "intake/outfall level 7", "m", 7, 3),
    _n(0x43, "Z8", "intake/outfall level 8", "m", 7, 3),
    _n(0x44, "SQ", "sediment concentration", "kg/m³", 9, 3),
    _n(0x46, "pH", "pH", "", 4, 2),
    _n(0x47, "DO", "dissolved oxygen", "mg/L", 4, 1),
    _n(0x48, "COND", "conductivity", "µS/cm", 5, 0),
    _n(0x49, "TURB", "turbidity", "degree", 3, 0),
    _n(0x4A, "CODMN", "permanganate index", "mg/L", 4, 1),
    _n(0x4B, "REDOX", "redox potential", "mV", 5, 1),
    _n(0x4C, "NH4N", "ammonia nitrogen", "mg/L", 6, 2),
    _n(0x4D, "TP", "total phosphorus", "mg/L", 5, 3),
    _n(0x4E, "TN", "total nitrogen", "mg/L", 5, 2),
    _n(0x4F, "TOC", "total organic carbon", "mg/L", 4, 2),
    _n(0x50, "CU", "copper", "mg/L", 7, 4),
    _n(0x51, "ZN", "zinc", "mg/L", 6, 4),
    _n(0x52, "SE", "selenium", "mg/L", 7, 5),
    _n(0x53, "AS", "arsenic", "mg/L", 7, 5),
    _n(0x54, "THG", "total mercury", "mg/L", 7, 5),
    _n(0x55, "CD", "cadmium", "mg/L", 7, 5),
    _n(0x56, "PB", "lead", "mg/L", 7, 5),
    _n(0x57, "CHLA", "chlorophyll a", "mg/L", 4, 2),
    _n(0x58, "WP1", "water pressure 1", "kPa", 5, 2),
    _n(0x59, "WP2", "water pressure 2", "kPa", 5, 2),
    _n(0x5A, "WP3", "water pressure 3", "kPa", 5, 2),
    _n(0x5B, "WP4", "water pressure 4", "kPa", 5, 2),
    _n(0x5C, "WP5", "water pressure 5", "kPa", 5, 2),
    _n(0x5D, "WP6", "water pressure 6", "kPa", 5, 2),
    _n(0x5E, "WP7", "water pressure 7", "kPa", 5, 2),
    _n(0x5F, "WP8", "water pressure 8", "kPa", 5, 2),
    _n(0x60, "SYL1", "water meter 1 remaining volume", "m³", 11, 3),
    _n(0x61, "SYL2", "water meter 2 remaining volume", "m³", 11, 3),
    _n(0x62, "SYL3", "water meter 3 remaining volume", "m³", 11, 3),
    _n(0x63, "SYL4", "water meter 4 remaining volume", "m³", 11, 3),
    _n(0x64, "SYL5", "water meter 5 remaining volume", "m³", 11, 3),
    _n(0x65, "SYL6", "water meter 6 remaining volume", "m³", 11, 3),
    _n(0x66, "SYL7", "water meter 7 remaining volume", "m³", 11, 3),
    _n(0x67, "SYL8", "water meter 8 remaining volume", "m³", 11, 3),
    _n(0x68, "SBL1", "water meter 1 hourly volume", "m³/h", 10, 2),
    _n(0x69, "SBL2", "water meter 2 hourly volume", "m³/h", 10, 2),
    _n(0x6A, "SBL3", "water meter 3 hourly volume", "m³/h", 10, 2),
    _n(0x6B, "SBL4", "water meter 4 hourly volume", "m³/h", 10, 2),
    _n(0x6C, "SBL5", "water meter 5 hourly volume", "m³/h", 10, 2),
    _n(0x6D, "SBL6", "water meter 6 hourly volume", "m³/h", 10, 2),
    _n(0x6E, "SBL7", "water meter 7 hourly volume", "m³/h", 10, 2),
    _n(0x6F, "SBL8", "water meter 8 hourly volume", "m³/h", 10, 2),
    _n(0x70, "VTA", "AC phase A voltage", "V", 4, 1),
    _n(0x71, "VTB", "AC phase B voltage", "V", 4, 1),
    _n(0x72, "VTC", "AC phase C voltage", "V", 4, 1),
    _n(0x73, "VIA", "AC phase A current", "A", 4, 1),
    _n(0x74, "VIB", "AC phase B current", "A", 4, 1),
    _n(0x75, "VIC", "AC phase C current", "A", 4, 1),
    ElementDef(0x45, "ZT", "station status and alarm bits (table 58)", "", 8, 0, "status"),
    ElementDef(0xF2, "RGZS", "manual entry (人工置数)", "", 0, 0, "raw"),
    ElementDef(0xF3, "PIC", "picture (JPG)", "", 0, 0, "raw"),
    ElementDef(0xF4, "DRP", "twelve 5-minute rainfalls of the hour", "mm", 0, 1, "rain5"),
    *(ElementDef(0xF5 + i, f"DRZ{i + 1}", f"twelve 5-minute relative levels {i + 1}", "m",
                 0, 2, "level5") for i in range(8)),
    ElementDef(0xFD, "DATA", "bulk velocity data (流速批量数据)", "", 0, 0, "raw"),
)
BY_IDENTIFIER: dict[int, ElementDef] = {e.identifier: e for e in ELEMENTS}
BY_MNEMONIC: dict[str, ElementDef] = {e.mnemonic: e for e in ELEMENTS}
# Kinds whose data run to the end of the body (table C.1 notes c, d, f).
_REST_OF_BODY = frozenset({0xF2, 0xF3, 0xFD})


def element(key: str | int) -> ElementDef:
    """The table C.1 element with this mnemonic ("ZU") or identifier (0x3B)."""
    found = BY_MNEMONIC.get(key) if isinstance(key, str) else BY_IDENTIFIER.get(key)
    if found is None:
        shown = key if isinstance(key, str) else f"{key:02X}H"
        raise KeyError(f"SL 651 has no element {shown!r} in table C.1; give a user-defined "
                       "FFxxH element its N(x,y) with ElementDef.user_defined")
    return found
