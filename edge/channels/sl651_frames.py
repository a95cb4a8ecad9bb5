"""SL 651-2014 (水文监测数据通信规约) HEX/BCD frame codec for reporting to provincial centres.

Provincial and county hydrological platforms take telemetry from reservoir stations in the
frames of SL 651-2014, the water ministry's "hydrologic monitoring system data transmission
protocol". This module is the pure codec of its HEX/BCD encoding: frames (§6.2, §6.5, tables
10, 11, 12, 20, 21), report bodies (§6.6, tables 24-37, 42-43), elements (§6.6.3, table 26,
annex C) and the centre's confirmations (§6.3). It does no I/O; the SL 651 output channel
owns the connection. docs/sl651.md settles, with sources, every point where the standard's
text is terse or open-source implementations disagree.

Conventions kept throughout:

* Bytes go high byte first (§6.2.3.1), the CRC included (table 11; the Modbus sensor
  protocol of §5.2 in the same standard sends its CRC low byte first: do not mix them).
* Times are sent in Beijing time (UTC+8, no daylight saving): callers pass timezone-aware
  datetimes or epoch milliseconds; naive datetimes are refused because their zone is a guess.
* A station address is the 10 hex digits of its 5 bytes: BCD digits for a hydrological
  station (table 13), BCD county code plus a HEX custom part for other stations (table 14).
* A value is rounded to its element's decimals half away from zero, on the value's shortest
  decimal form (2.675 gives 2.68, not the 2.67 its binary double would give).
* A missing value is sent as F digits to the element's full length, never as a made-up zero,
  and decodes to None.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from enum import IntEnum
from typing import Literal, TypeAlias

BEIJING = timezone(timedelta(hours=8), "Beijing")

# Control characters, table 10.
SOH_HEX = b"\x7e\x7e"
STX = 0x02  # start of body
SYN = 0x16  # start of body of a multi-packet (M3) transfer
ETX = 0x03  # end, nothing follows
ETB = 0x17  # end, more packets follow
ENQ = 0x05  # end of a centre query or command
EOT = 0x04  # end of a confirmation: the station may leave the link
ACK = 0x06  # end of a confirmation of a packet that ended in ETB: go on
NAK = 0x15  # end of a request to send a packet again
ESC = 0x1B  # end of a confirmation: stay online (10 minutes) for the centre's commands

CONTROL_NAMES: dict[int, str] = {
    STX: "STX start of body",
    SYN: "SYN start of a multi-packet body",
    ETX: "ETX end, nothing follows",
    ETB: "ETB end, more packets follow",
    ENQ: "ENQ end of a query or command",
    EOT: "EOT end of transmission, the station may leave",
    ACK: "ACK packet confirmed, send the next",
    NAK: "NAK send the packet again",
    ESC: "ESC end of transmission, stay online",
}
UPLINK_ENDS = frozenset({ETX, ETB})
DOWNLINK_ENDS = frozenset({ENQ, ACK, NAK, EOT, ESC})

HEADER_SIZE = 14  # 7E 7E, addresses (6), password (2), function, direction+length (2), STX
MIN_FRAME_SIZE = HEADER_SIZE + 3  # an empty body, the end character and the CRC
MAX_BODY = 0x0FFF  # the 12 length bits (table 20)
MAX_SERIAL = 0xFFFF


class Function(IntEnum):
    """Function codes of annex B (table B.1) that reservoir-edge sends or answers."""

    KEEP_ALIVE = 0x2F
    TEST = 0x30
    UNIFORM_INTERVAL = 0x31
    TIMED = 0x32
    ADDED = 0x33
    HOURLY = 0x34
    MANUAL = 0x35
    PICTURE = 0x36
    QUERY_REALTIME = 0x37
    QUERY_PERIOD = 0x38
    QUERY_MANUAL = 0x39
    QUERY_ELEMENTS = 0x3A


FUNCTION_NAMES: dict[int, str] = {
    0x2F: "keep-alive (链路维持报)",
    0x30: "test report (测试报)",
    0x31: "uniform-interval report (均匀时段水文信息报)",
    0x32: "timed report (遥测站定时报)",
    0x33: "added report (遥测站加报报)",
    0x34: "hourly report (遥测站小时报)",
    0x35: "manual entry report (遥测站人工置数报)",
    0x36: "picture report or query (遥测站图片报)",
    0x37: "centre queries real-time data (中心站查询遥测站实时数据)",
    0x38: "centre queries period data (中心站查询遥测站时段数据)",
    0x39: "centre queries manual entry (中心站查询遥测站人工置数)",
    0x3A: "centre queries given elements (中心站查询遥测站指定要素数据)",
    0x40: "centre writes the basic configuration (中心站修改遥测站基本配置表)",
    0x41: "basic configuration read or self-report (读取遥测站基本配置表)",
    0x42: "centre writes the run parameters (中心站修改遥测站运行参数配置表)",
    0x43: "run parameters read or self-report (读取遥测站运行参数配置表)",
    0x44: "pump motor real-time data (查询水泵电机实时工作数据)",
    0x45: "software version (查询遥测终端软件版本)",
    0x46: "station status and alarms (查询遥测站状态和报警信息)",
    0x47: "clear stored data (初始化固态存储数据)",
    0x48: "factory reset (恢复终端出厂设置)",
    0x49: "change password (修改密码)",
    0x4A: "set the station clock (设置遥测站时钟)",
    0x4B: "set the IC card state (设置遥测终端IC卡状态)",
    0x4C: "pump command or state (控制水泵开关命令/水泵状态信息自报)",
    0x4D: "valve command or state (控制阀门开关命令/阀门状态信息自报)",
    0x4E: "gate command or state (控制闸门开关命令/闸门状态信息自报)",
    0x4F: "water quota command (水量定值控制命令)",
    0x50: "event records (中心站查询遥测站事件记录)",
    0x51: "station clock query (中心站查询遥测站时钟)",
}

# Self-reports a centre confirms in M2 (§6.3.1.2 b). Keep-alives get no reply (§6.6.4.2).
REPORT_FUNCTIONS = frozenset({0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36})


class Category(IntEnum):
    """Station categories of annex A (table A.1): the ASCII letter's code."""

    RAINFALL = 0x50  # P
    RIVER = 0x48  # H
    RESERVOIR = 0x4B  # K, reservoir or lake
    SLUICE = 0x5A  # Z, sluice or dam
    PUMPING = 0x44  # D
    TIDE = 0x54  # T
    SOIL_MOISTURE = 0x4D  # M
    GROUNDWATER = 0x47  # G
    WATER_QUALITY = 0x51  # Q
    INTAKE = 0x49  # I
    OUTFALL = 0x4F  # O


CATEGORY_NAMES: dict[int, str] = {
    0x50: "P rainfall (降水)",
    0x48: "H river (河道)",
    0x4B: "K reservoir or lake (水库(湖泊))",
    0x5A: "Z sluice or dam (闸坝)",
    0x44: "D pumping station (泵站)",
    0x54: "T tide (潮汐)",
    0x4D: "M soil moisture (墒情)",
    0x47: "G groundwater (地下水)",
    0x51: "Q water quality (水质)",
    0x49: "I intake (取水口)",
    0x4F: "O outfall (排水口)",
}

# Table 58: the bits of the 45H status and alarm word.
STATUS_BITS: dict[int, str] = {
    0: "mains power off (交流电充电状态: 停电)",
    1: "battery voltage low (蓄电池电压低)",
    2: "water level over limit (水位超限报警)",
    3: "flow over limit (流量超限报警)",
    4: "water quality over limit (水质超限报警)",
    5: "flow meter fault (流量仪表故障)",
    6: "level gauge fault (水位仪表故障)",
    7: "cabinet door closed (终端箱门关闭)",
    8: "memory fault (存储器异常)",
    9: "IC card active (IC卡有效)",
    10: "pump stopped (水泵停机)",
    11: "remaining water over limit (剩余水量超限)",
}


class Sl651Error(ValueError):
    """Something cannot be encoded or decoded as SL 651-2014 says."""


class EncodeError(Sl651Error):
    """A value or field cannot be put into a frame; the message names it."""


class FrameError(Sl651Error):
    """Bytes are not a valid frame; ``field`` and ``offset`` (from the first 7E) say where."""

    def __init__(self, field: str, offset: int, problem: str) -> None:
        super().__init__(f"SL 651 frame: {field} at byte {offset}: {problem}")
        self.field = field
        self.offset = offset
        self.problem = problem


# --- CRC ---------------------------------------------------------------------------------


def crc16(data: bytes) -> int:
    """CRC-16 of tables 11 and 20: X^16+X^15+X^2+1 reflected (0xA001), initial 0xFFFF.

    It covers every byte from the first 7E through the end character.
    """
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def crc_bytes(data: bytes) -> bytes:
    """The two CRC bytes as sent: high byte first (table 11)."""
    return crc16(data).to_bytes(2, "big")


# --- BCD, times, addresses ---------------------------------------------------------------


def bcd_encode(digits: str) -> bytes:
    """Pack decimal digits two to a byte, padding one leading 0 when the count is odd."""
    if not digits.isascii() or not digits.isdigit():
        raise EncodeError(f"BCD needs decimal digits only, got {digits!r}")
    if len(digits) % 2:
        digits = "0" + digits
    return bytes.fromhex(digits)


def bcd_decode(data: bytes, field: str = "BCD", offset: int = 0) -> str:
    """The decimal digits of BCD bytes; a nibble above 9 is a FrameError at its byte."""
    text = data.hex().upper()
    for index, char in enumerate(text):
        if not char.isdigit():
            raise FrameError(field, offset + index // 2,
                             f"{data[index // 2]:02X} is not BCD (nibble {char})")
    return text


def to_beijing(when: datetime | int) -> datetime:
    """A timezone-aware datetime or UTC epoch milliseconds as Beijing wall-clock time."""
    if isinstance(when, bool):
        raise EncodeError(f"a time must be a datetime or epoch milliseconds, got {when!r}")
    if isinstance(when, int):
        return datetime.fromtimestamp(when / 1000, tz=BEIJING)
    if not isinstance(when, datetime):
        raise EncodeError(f"a time must be a datetime or epoch milliseconds, got {when!r}")
    if when.tzinfo is None or when.utcoffset() is None:
        raise EncodeError(f"time {when.isoformat()} has no timezone: SL 651 sends Beijing "
                          "time, so pass an aware datetime or epoch milliseconds")
    return when.astimezone(BEIJING)


def _time_bcd(when: datetime | int, with_seconds: bool, what: str) -> bytes:
    local = to_beijing(when)
    if not 2000 <= local.year <= 2099:
        raise EncodeError(f"{what} {local.isoformat()}: SL 651 carries a two-digit year, "
                          "so only 2000-2099 can be sent")
    text = local.strftime("%y%m%d%H%M%S" if with_seconds else "%y%m%d%H%M")
    return bytes.fromhex(text)


def send_time_bytes(when: datetime | int) -> bytes:
    """Send time (发报时间): 6 bytes BCD YYMMDDhhmmss, Beijing time (§6.6.2.5)."""
    return _time_bcd(when, True, "send time")


def observation_time_bytes(when: datetime | int) -> bytes:
    """Observation time (观测时间): 5 bytes BCD YYMMDDhhmm; seconds are dropped (§6.6.2.8)."""
    return _time_bcd(when, False, "observation time")


def decode_time(data: bytes, field: str, offset: int) -> datetime:
    """Beijing time from 5 (YYMMDDhhmm) or 6 (YYMMDDhhmmss) BCD bytes; years are 20YY."""
    digits = bcd_decode(data, field, offset)
    parts = [int(digits[i:i + 2]) for i in range(0, len(digits), 2)]
    year, month, day, hour, minute = parts[:5]
    second = parts[5] if len(parts) > 5 else 0
    try:
        return datetime(2000 + year, month, day, hour, minute, second, tzinfo=BEIJING)
    except ValueError as exc:
        raise FrameError(field, offset, f"{data.hex(' ').upper()} is not a date: {exc}") from exc


def station_bytes(station: str) -> bytes:
    """The 5 address bytes from their 10 hex digits (§6.2.3.2)."""
    text = station.strip()
    if len(text) != 10 or any(c not in "0123456789abcdefABCDEF" for c in text):
        raise EncodeError(f"station address {station!r} must be 10 hex digits "
                          "(5 bytes; BCD digits for a hydrological station)")
    return bytes.fromhex(text)


def _check_range(what: str, value: int, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise EncodeError(f"{what} must be an integer in {low}..{high}, got {value!r}")
    return value


def next_serial(serial: int) -> int:
    """The serial number after ``serial``: uplink serials cycle 1..65535, skipping 0.

    §6.6.2.4: "上行报文流水号在01～65535之间循环"; 0 is reserved for frames the centre
    starts. A resent report keeps its serial; a keep-alive reuses the last report's serial
    without counting up (§6.6.4.2).
    """
    _check_range("serial number", serial, 0, MAX_SERIAL)
    return 1 if serial >= MAX_SERIAL else serial + 1


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
        _check_range("user-defined identifier", identifier, 0xFF00, 0xFFFE)
        _check_range(f"{mnemonic} digits", digits, 1, 60)
        _check_range(f"{mnemonic} decimals", decimals, 0, min(7, digits))
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


@dataclass(frozen=True, slots=True)
class Element:
    """A value to send under an element; ``decimals`` picks one of its allowed counts."""

    definition: ElementDef
    value: ElementData
    decimals: int | None = None


def value_of(key: str | int | ElementDef, value: ElementData,
             decimals: int | None = None) -> Element:
    """Shorthand: ``value_of("ZU", 123.45, decimals=2)``."""
    definition = key if isinstance(key, ElementDef) else element(key)
    return Element(definition, value, decimals)


def _scaled(value: object, decimals: int, what: str) -> int:
    """``value`` times 10**decimals, rounded half away from zero on its shortest decimal form."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise EncodeError(f"{what}: {value!r} is not a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise EncodeError(f"{what}: {value!r} cannot be sent")
    exact = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    return int(exact.scaleb(decimals).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _data_definition(nbytes: int, decimals: int, what: str) -> int:
    if nbytes > 31:
        raise EncodeError(f"{what}: {nbytes} bytes do not fit the 5 length bits of the "
                          "data-definition byte (table 26: 0..31)")
    return nbytes << 3 | decimals


def encode_element(definition: ElementDef, value: ElementData,
                   decimals: int | None = None) -> bytes:
    """Identifier, data-definition byte and data of one element (§6.6.3, table 26)."""
    what = definition.label
    ident = definition.identifier_bytes
    if definition.kind == "number":
        dec = definition.decimals if decimals is None else decimals
        if dec != definition.decimals and dec not in definition.alt_decimals:
            allowed = ", ".join(str(d) for d in (definition.decimals, *definition.alt_decimals))
            raise EncodeError(f"{what} is sent with {allowed} decimals, not {dec}")
        # Fewer decimals keep the integer digits: ZU N(7,3) with 2 decimals is N(6,2).
        digits = definition.digits - (definition.decimals - dec)
        width = (digits + 1) // 2
        if value is None:
            return ident + bytes([_data_definition(width, dec, what)]) + b"\xff" * width
        scaled = _scaled(value, dec, what)
        if abs(scaled) >= 10 ** digits:
            limit = (10 ** digits - 1) / 10 ** dec
            raise EncodeError(f"{what} value {value!r} does not fit N({digits},{dec}): "
                              f"at most {limit:.{dec}f} in magnitude")
        data = bcd_encode(str(abs(scaled)).rjust(digits, "0"))
        if scaled < 0:
            # §6.6.3.3 a: FF marks a negative; with an odd digit count the pad nibble makes
            # the "FF0" the standard asks for. Table 26: the byte count includes it.
            data = b"\xff" + data
        return ident + bytes([_data_definition(len(data), dec, what)]) + data
    if decimals is not None and decimals != definition.decimals:
        raise EncodeError(f"{what} has a fixed resolution; decimals cannot be chosen")
    if definition.kind in ("rain5", "level5"):
        return ident + _encode_five_minute(definition, value)
    if definition.kind == "status":
        if value is None:
            return ident + b"\x20" + b"\xff" * 4
        if isinstance(value, bool) or not isinstance(value, int):
            raise EncodeError(f"{what} needs the status word as an integer, got {value!r}")
        word = _check_range(f"{what} status word", value, 0, 0xFFFFFFFF)
        return ident + b"\x20" + word.to_bytes(4, "big")
    if definition.kind == "timestep":
        return ident + b"\x18" + _encode_time_step(value, what)
    if not isinstance(value, bytes | bytearray):
        raise EncodeError(f"{what} carries raw bytes, got {value!r}")
    # Table C.1 notes c, d: the data-definition byte repeats the guide byte (F2H, F3H);
    # note f gives F6H for FDH as printed. Decoders take these data to the body's end.
    guide = 0xF6 if definition.identifier == 0xFD else definition.identifier & 0xFF
    return ident + bytes([guide]) + bytes(value)


def _encode_five_minute(definition: ElementDef, value: ElementData) -> bytes:
    """F4H: twelve 1-byte HEX rainfalls in 0.1 mm, FFH invalid, at most 25.4 mm each.
    F5H-FCH: twelve 2-byte HEX relative levels in 0.01 m, FFFFH invalid, at most 655.34 m.
    Table C.1 rows 5-13; the data-definition bytes 60H and C0H are the byte counts 12 and 24.
    """
    what = definition.label
    rain = definition.kind == "rain5"
    width, top = (1, 254) if rain else (2, 65534)
    if not isinstance(value, Sequence) or isinstance(value, str | bytes) or len(value) != 12:
        raise EncodeError(f"{what} needs twelve 5-minute values (None where missing), "
                          f"got {value!r}")
    out = bytearray([(12 * width) << 3])
    for index, item in enumerate(value):
        if item is None:
            out += b"\xff" * width
            continue
        scaled = _scaled(item, definition.decimals, f"{what} value {index + 1}")
        if not 0 <= scaled <= top:
            limit = top / 10 ** definition.decimals
            hint = (" (table C.1 note e: carry the excess into the next 5 minutes)" if rain
                    else " (relative to the station's level base, 水位基值)")
            raise EncodeError(f"{what} value {index + 1} = {item!r} is outside "
                              f"0..{limit:g} {definition.unit}{hint}")
        out += scaled.to_bytes(width, "big")
    return bytes(out)


def _encode_time_step(value: ElementData, what: str) -> bytes:
    """Table C.3: days, hours and minutes, one BCD byte each; 000000 is the fixed pairing
    with the hour's DRP/DRZ combination data."""
    if value is None:
        return b"\xff\xff\xff"
    if not isinstance(value, timedelta):
        raise EncodeError(f"{what} needs a timedelta, got {value!r}")
    total = value.total_seconds()
    if total < 0 or total % 60:
        raise EncodeError(f"{what} {value} must be whole, non-negative minutes")
    minutes = int(total // 60)
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    if days > 31:
        raise EncodeError(f"{what} {value} is longer than 31 days (table C.3)")
    return bytes.fromhex(f"{days:02d}{hours:02d}{mins:02d}")


def spread_five_minute_rain(amounts_mm: Sequence[float]) -> list[float]:
    """Apply table C.1 note e: a 5-minute amount above 25.4 mm carries into the next ones.

    The hour's total is kept; whatever cannot be carried past the last interval stays in it,
    so the caller sees the encode error rather than a silently lost amount.
    """
    out: list[float] = []
    carry = Decimal(0)
    for amount in amounts_mm:
        total = Decimal(repr(float(amount))) + carry
        sent = min(total, Decimal("25.4"))
        carry = total - sent
        out.append(float(sent))
    if carry and out:
        out[-1] = float(Decimal(repr(out[-1])) + carry)
    return out


@dataclass(frozen=True, slots=True)
class DecodedElement:
    """One element as received, with where it sat, its raw data and its decoded value."""

    identifier: int
    definition: ElementDef | None
    data_definition: int
    raw: bytes
    value: ElementData
    decimals: int
    observed: datetime | None
    offset: int
    note: str = ""

    @property
    def mnemonic(self) -> str:
        if self.definition is not None:
            return self.definition.mnemonic
        return f"{self.identifier:02X}H"


def _all_fill(data: bytes) -> str:
    """'F' for the standard's missing-value fill, 'A' for AA AA (a vendor's), '' otherwise."""
    if data and all(b == 0xFF for b in data):
        return "F"
    if data and all(b == 0xAA for b in data):
        return "A"
    return ""


def _decode_number(data: bytes, decimals: int, what: str, offset: int) -> tuple[
        float | int | None, str]:
    fill = _all_fill(data)
    if fill == "F":
        return None, "missing (all F)"
    if fill == "A":
        # Not the standard's fill (§6.6.4.4 d asks for F), but real stations send it and
        # the yu-xiaoyao/sl651-2014-server centre reads it as invalid: never a number.
        return None, "missing (AA fill, not the standard's F)"
    negative = len(data) > 1 and data[0] == 0xFF
    digits = bcd_decode(data[1:] if negative else data, what, offset + (1 if negative else 0))
    number = int(digits) if digits else 0
    if negative:
        number = -number
    if decimals == 0:
        return number, "negative" if negative else ""
    return number / 10 ** decimals, "negative" if negative else ""


def _decode_five_minute(kind: ElementKind, data: bytes, what: str, offset: int) -> Rain5:
    width, scale = (1, 10) if kind == "rain5" else (2, 100)
    if len(data) % width:
        raise FrameError(what, offset, f"{len(data)} bytes are not whole {width}-byte values")
    values: list[float | None] = []
    for i in range(0, len(data), width):
        chunk = data[i:i + width]
        values.append(None if _all_fill(chunk) == "F" else int.from_bytes(chunk, "big") / scale)
    return tuple(values)


def decode_element(body: bytes, index: int, observed: datetime | None,
                   base: int = 0) -> tuple[DecodedElement, int]:
    """Decode the element starting at ``body[index]``; offsets in errors add ``base``.

    Returns the element and the index after it. Unknown identifiers still decode: the
    data-definition byte says how long their data are and where the decimal point goes.
    """
    start = index
    identifier = body[index]
    index += 1
    if identifier == 0xFF:
        if index >= len(body):
            raise FrameError("element identifier", base + start,
                             "FF (user-defined) without its second byte")
        identifier = 0xFF00 | body[index]
        index += 1
    definition = BY_IDENTIFIER.get(identifier)
    label = definition.label if definition else f"element {identifier:02X}H"
    if index >= len(body):
        raise FrameError(label, base + start, "the body ends before its data-definition byte")
    ddef = body[index]
    index += 1
    if identifier in _REST_OF_BODY:
        raw = body[index:]
        return DecodedElement(identifier, definition, ddef, raw, raw, 0, observed,
                              base + start), len(body)
    nbytes, decimals = ddef >> 3, ddef & 0x07
    if index + nbytes > len(body):
        raise FrameError(label, base + start,
                         f"data definition {ddef:02X}H announces {nbytes} bytes, only "
                         f"{len(body) - index} remain in the body")
    raw = body[index:index + nbytes]
    kind = definition.kind if definition else "number"
    value: ElementData
    note = ""
    if kind in ("rain5", "level5"):
        value = _decode_five_minute(kind, raw, label, base + index)
    elif kind == "status":
        value = None if _all_fill(raw) == "F" else int.from_bytes(raw, "big")
    elif kind == "timestep":
        if _all_fill(raw) == "F":
            value = None
        else:
            digits = bcd_decode(raw, label, base + index).rjust(6, "0")
            value = timedelta(days=int(digits[-6:-4]), hours=int(digits[-4:-2]),
                              minutes=int(digits[-2:]))
    else:
        value, note = _decode_number(raw, decimals, label, base + index)
    return DecodedElement(identifier, definition, ddef, raw, value, decimals, observed,
                          base + start, note), index + nbytes


# --- Frames (§6.2.3, §6.5, tables 11, 12, 20-23) ------------------------------------------


@dataclass(frozen=True, slots=True)
class Frame:
    """One HEX/BCD frame: header fields, body and end character.

    ``downlink`` frames (centre to station, direction bits 1000) carry the station address
    before the centre address (table 21). ``packet`` is (total, sequence) of an M3 transfer
    and goes with ``start=SYN`` only (table 22).
    """

    centre: int
    station: str
    password: int
    function: int
    body: bytes
    downlink: bool = False
    start: int = STX
    end: int = ETX
    packet: tuple[int, int] | None = None


def encode_frame(frame: Frame) -> bytes:
    """The bytes of ``frame``, CRC included; invalid fields raise EncodeError naming them."""
    _check_range("centre address", frame.centre, 1, 255)
    _check_range("password", frame.password, 0, 0xFFFF)
    _check_range("function code", frame.function, 0, 0xFF)
    ends = DOWNLINK_ENDS if frame.downlink else UPLINK_ENDS
    if frame.end not in ends:
        names = ", ".join(CONTROL_NAMES[e].split()[0] for e in sorted(ends))
        raise EncodeError(f"end character {frame.end:02X}H is not one "
                          f"{'a downlink' if frame.downlink else 'an uplink'} frame ends with "
                          f"({names})")
    station = station_bytes(frame.station)
    addresses = (station + bytes([frame.centre]) if frame.downlink
                 else bytes([frame.centre]) + station)
    payload = frame.body
    if frame.start == SYN:
        if frame.packet is None:
            raise EncodeError("a SYN (multi-packet) frame needs its packet (total, sequence)")
        total, sequence = frame.packet
        _check_range("packet total", total, 1, 0xFFF)
        _check_range("packet sequence", sequence, 1, 0xFFF)
        payload = (total << 12 | sequence).to_bytes(3, "big") + payload
    elif frame.start != STX:
        raise EncodeError(f"start character {frame.start:02X}H is neither STX nor SYN")
    elif frame.packet is not None:
        raise EncodeError("packet (total, sequence) goes with a SYN start only")
    if len(payload) > MAX_BODY:
        raise EncodeError(f"body of {len(payload)} bytes exceeds the 12-bit length field "
                          f"({MAX_BODY}); split it into M3 packets")
    length = (0x8000 if frame.downlink else 0) | len(payload)
    head = (SOH_HEX + addresses + frame.password.to_bytes(2, "big")
            + bytes([frame.function]) + length.to_bytes(2, "big") + bytes([frame.start]))
    unsigned = head + payload + bytes([frame.end])
    return unsigned + crc_bytes(unsigned)


def frame_size(buffer: bytes) -> int | None:
    """Size of the frame at the start of ``buffer``, or None until its header has arrived.

    For splitting a TCP byte stream; a buffer not starting with 7E 7E raises FrameError.
    """
    probe = buffer[:2]
    if probe != SOH_HEX[:len(probe)]:
        raise FrameError("start", 0, f"expected 7E 7E, got {probe.hex(' ').upper()}")
    if len(buffer) < HEADER_SIZE:
        return None
    return MIN_FRAME_SIZE + (int.from_bytes(buffer[11:13], "big") & 0x0FFF)


def _hexdata(text: bytes | bytearray | str) -> bytes:
    if isinstance(text, bytes | bytearray):
        return bytes(text)
    cleaned = "".join(text.split()).replace("-", "").replace(":", "")
    try:
        return bytes.fromhex(cleaned)
    except ValueError as exc:
        raise Sl651Error(f"not hex text: {text[:60]!r} ({exc})") from exc


def parse_frame(data: bytes | bytearray | str) -> Frame:
    """Exactly one frame from its bytes (or hex text); errors name the field and byte."""
    raw = _hexdata(data)
    if raw[:2] != SOH_HEX:
        raise FrameError("start", 0, f"expected 7E 7E, got {raw[:2].hex(' ').upper() or 'nothing'}")
    if len(raw) < MIN_FRAME_SIZE:
        raise FrameError("frame", len(raw), f"short frame: {len(raw)} bytes, a frame needs "
                         f"at least {MIN_FRAME_SIZE}")
    direction = raw[11] >> 4
    if direction not in (0x0, 0x8):
        raise FrameError("direction", 11, f"{direction:X} is neither 0 (uplink) nor 8 (downlink)")
    downlink = direction == 0x8
    length = int.from_bytes(raw[11:13], "big") & 0x0FFF
    expected = MIN_FRAME_SIZE + length
    if len(raw) != expected:
        raise FrameError("length", 11, f"the length field says {length} body bytes, so the "
                         f"frame is {expected} bytes; {len(raw)} were given")
    start = raw[13]
    if start not in (STX, SYN):
        raise FrameError("start of body", 13, f"{start:02X}H is neither STX (02) nor SYN (16)")
    end_at = HEADER_SIZE + length
    end = raw[end_at]
    ends = DOWNLINK_ENDS if downlink else UPLINK_ENDS
    if end not in ends:
        raise FrameError("end character", end_at,
                         f"{end:02X}H does not end {'a downlink' if downlink else 'an uplink'} "
                         f"frame (expected {', '.join(f'{e:02X}H' for e in sorted(ends))})")
    computed = crc16(raw[:-2])
    received = int.from_bytes(raw[-2:], "big")
    if computed != received:
        swapped = " (the sender put the low byte first)" if (
            computed.to_bytes(2, "little") == raw[-2:]) else ""
        raise FrameError("CRC", len(raw) - 2, f"received {received:04X}, computed "
                         f"{computed:04X}{swapped}")
    if downlink:
        station, centre = raw[2:7], raw[7]
    else:
        centre, station = raw[2], raw[3:8]
    payload = raw[HEADER_SIZE:end_at]
    packet = None
    if start == SYN:
        if len(payload) < 3:
            raise FrameError("packet", HEADER_SIZE, "a SYN frame needs 3 bytes of packet count")
        word = int.from_bytes(payload[:3], "big")
        packet = (word >> 12, word & 0xFFF)
        payload = payload[3:]
    return Frame(centre, station.hex().upper(), int.from_bytes(raw[8:10], "big"), raw[10],
                 payload, downlink, start, end, packet)


# --- Bodies (§6.6, tables 24, 25, 27-37) ---------------------------------------------------


def report_body(*, serial: int, sent: datetime | int, station: str, category: int,
                groups: Iterable[tuple[datetime | int, Sequence[Element]]]) -> bytes:
    """Serial, send time, F1 F1 station + category, then F0 F0 observation time + elements
    for each group (table 24; §6.6.2.8 e: elements observed at another time get their own
    observation-time group)."""
    _check_range("category", category, 0, 0xFF)
    out = bytearray(_serial_and_time(serial, sent))
    out += b"\xf1\xf1" + station_bytes(station) + bytes([category])
    for observed, elements in groups:
        out += b"\xf0\xf0" + observation_time_bytes(observed)
        for item in elements:
            out += encode_element(item.definition, item.value, item.decimals)
    return bytes(out)


def _serial_and_time(serial: int, sent: datetime | int, downlink_start: bool = False) -> bytes:
    low = 0 if downlink_start else 1
    _check_range("serial number", serial, low, MAX_SERIAL)
    return serial.to_bytes(2, "big") + send_time_bytes(sent)


@dataclass(frozen=True, slots=True)
class Report:
    """An uplink body decoded: serial, send time, station group and elements in order."""

    serial: int
    sent: datetime
    station: str | None
    category: int | None
    observed: datetime | None
    elements: tuple[DecodedElement, ...]

    def values(self) -> dict[str, ElementData]:
        """Each element's value by mnemonic (FFxxH or xxH when not in table C.1), first wins."""
        out: dict[str, ElementData] = {}
        for item in self.elements:
            out.setdefault(item.mnemonic, item.value)
        return out


def parse_report(body: bytes, base: int = HEADER_SIZE) -> Report:
    """Decode an uplink body; ``base`` is the body's offset in its frame, for error offsets."""
    if len(body) < 8:
        raise FrameError("serial and send time", base,
                         f"the body has {len(body)} bytes, a report needs at least 8")
    serial = int.from_bytes(body[:2], "big")
    sent = decode_time(body[2:8], "send time", base + 2)
    station: str | None = None
    category: int | None = None
    first_observed: datetime | None = None
    observed: datetime | None = None
    elements: list[DecodedElement] = []
    index = 8
    while index < len(body):
        guide = body[index:index + 2]
        if guide == b"\xf1\xf1":
            if station is not None:
                raise FrameError("station address", base + index,
                                 "a second station group: multi-station bodies are not "
                                 "supported")
            if index + 8 > len(body):
                raise FrameError("station address", base + index, "F1 F1 needs 6 more bytes")
            station = body[index + 2:index + 7].hex().upper()
            category = body[index + 7]
            index += 8
        elif guide == b"\xf0\xf0":
            if index + 7 > len(body):
                raise FrameError("observation time", base + index, "F0 F0 needs 5 more bytes")
            observed = decode_time(body[index + 2:index + 7], "observation time",
                                   base + index + 2)
            first_observed = first_observed or observed
            index += 7
        else:
            item, index = decode_element(body, index, observed, base)
            elements.append(item)
    return Report(serial, sent, station, category, first_observed, tuple(elements))


# --- Frames of the report kinds the channel sends -----------------------------------------


def keep_alive_frame(*, centre: int, station: str, password: int, serial: int,
                     sent: datetime | int) -> bytes:
    """2FH keep-alive (table 27): serial and send time only; the serial is the last data
    report's, not counted up (§6.6.4.2). Centres do not answer it."""
    body = _serial_and_time(serial, sent)
    return encode_frame(Frame(centre, station, password, Function.KEEP_ALIVE, body))


def report_frame(function: int, *, centre: int, station: str, password: int, serial: int,
                 sent: datetime | int, category: int, observed: datetime | int,
                 elements: Sequence[Element], end: int = ETX) -> bytes:
    """A single-observation-time report: 30H test, 32H timed, 33H added (tables 28, 32, 34),
    or the 37H answer to a real-time query (table 43). The voltage VT goes last by custom
    of the tables, so callers list it last."""
    if function not in (0x30, 0x32, 0x33, 0x37, 0x3A):
        raise EncodeError(f"function {function:02X}H is not a single-time report "
                          "(30H, 32H, 33H, 37H, 3AH)")
    body = report_body(serial=serial, sent=sent, station=station, category=category,
                       groups=[(observed, elements)])
    return encode_frame(Frame(centre, station, password, function, body, end=end))


def hourly_frame(*, centre: int, station: str, password: int, serial: int,
                 sent: datetime | int, category: int, first_observed: datetime | int,
                 rain5_mm: Sequence[float | None] | None,
                 levels5_m: Sequence[float | None] | None, observed: datetime | int,
                 elements: Sequence[Element] = (), level_element: str = "DRZ1",
                 end: int = ETX) -> bytes:
    """34H hourly report (table 36).

    ``first_observed`` is the time of the first 5-minute group (the hour's start plus five
    minutes); F4H DRP carries the twelve 5-minute rainfalls and ``level_element`` (F5H DRZ1
    by default) the twelve 5-minute levels relative to the station's level base. The other
    elements (PT, the instantaneous level, VT) are observed at ``observed`` and get their
    own observation-time group when it differs (table 36 note).
    """
    series: list[Element] = []
    if rain5_mm is not None:
        series.append(value_of("DRP", tuple(rain5_mm)))
    if levels5_m is not None:
        definition = element(level_element)
        if definition.kind != "level5":
            raise EncodeError(f"{level_element} is not a 5-minute level element (DRZ1-DRZ8)")
        series.append(Element(definition, tuple(levels5_m)))
    first, later = to_beijing(first_observed), to_beijing(observed)
    groups: list[tuple[datetime | int, Sequence[Element]]]
    if first.replace(second=0, microsecond=0) == later.replace(second=0, microsecond=0):
        groups = [(first, [*series, *elements])]
    else:
        groups = [(first, series), (later, elements)]
    body = report_body(serial=serial, sent=sent, station=station, category=category,
                       groups=groups)
    return encode_frame(Frame(centre, station, password, Function.HOURLY, body, end=end))


def query_realtime_frame(*, centre: int, station: str, password: int, sent: datetime | int,
                         serial: int = 0) -> bytes:
    """37H downlink (table 42): a centre's query for the latest values, ending ENQ.

    §6.6.2.4 gives frames the centre starts serial 0; some centres number them anyway.
    """
    body = _serial_and_time(serial, sent, downlink_start=True)
    return encode_frame(Frame(centre, station, password, Function.QUERY_REALTIME, body,
                              downlink=True, end=ENQ))


def confirmation_frame(function: int, *, centre: int, station: str, password: int,
                       serial: int, sent: datetime | int, end: int = EOT) -> bytes:
    """The centre's confirmation (tables 29, 33, 35, 37): downlink, the report's function
    code, body = the report's serial + the centre's send time, ending EOT (leave) or ESC
    (stay online); ACK confirms a packet that ended ETB."""
    if end not in (EOT, ESC, ACK):
        raise EncodeError(f"a confirmation ends EOT, ESC or ACK, not {end:02X}H")
    body = _serial_and_time(serial, sent)
    return encode_frame(Frame(centre, station, password, function, body, downlink=True,
                              end=end))


def nak_frame(function: int, *, centre: int, station: str, password: int, serial: int,
              sent: datetime | int, packet: tuple[int, int] | None = None) -> bytes:
    """A downlink ending NAK: "send it again" (table 10). In M3 it names the bad packet
    (table 23: SYN start, total and the bad packet's sequence)."""
    body = _serial_and_time(serial, sent, downlink_start=True)
    start = SYN if packet is not None else STX
    return encode_frame(Frame(centre, station, password, function, body, downlink=True,
                              start=start, end=NAK, packet=packet))


ReplyKind = Literal["confirm", "ack", "nak", "command"]


@dataclass(frozen=True, slots=True)
class CentreReply:
    """A downlink frame read as the channel needs it: does it confirm our report?"""

    function: int
    serial: int | None
    sent: datetime | None
    end: int
    kind: ReplyKind
    frame: Frame

    @property
    def stay_online(self) -> bool:
        """ESC: keep the link up for the centre's commands (§6.3.2.4)."""
        return self.end == ESC

    def confirms(self, function: int, serial: int) -> bool:
        """True when this confirms the report of ``function`` with ``serial``.

        Matching is on the serial and function code only: centres differ in the send time
        they put back (their own clock per table 29, or the report's own time).
        """
        return (self.kind in ("confirm", "ack") and self.function == function
                and self.serial == serial)


def parse_centre_reply(data: bytes | bytearray | str | Frame) -> CentreReply:
    """Classify a downlink: confirm (EOT/ESC), ack (ACK), nak (NAK) or command (ENQ).

    The serial is None when a centre sends an empty body (one open-source centre confirms
    that way); the caller then cannot tell which report it confirms.
    """
    frame = data if isinstance(data, Frame) else parse_frame(data)
    if not frame.downlink:
        raise FrameError("direction", 11, "an uplink frame is not a centre reply")
    body = frame.body
    serial: int | None = None
    sent: datetime | None = None
    base = HEADER_SIZE + (3 if frame.packet else 0)
    if len(body) >= 8:
        serial = int.from_bytes(body[:2], "big")
        sent = decode_time(body[2:8], "send time", base + 2)
    elif body:
        raise FrameError("serial and send time", base,
                         f"{len(body)} bytes: a reply carries 8 (serial + send time) or none")
    kinds: dict[int, ReplyKind] = {EOT: "confirm", ESC: "confirm", ACK: "ack", NAK: "nak",
                                   ENQ: "command"}
    return CentreReply(frame.function, serial, sent, frame.end, kinds[frame.end], frame)


# --- describe(): a frame field by field, for comparing with a centre's log ----------------


def _hex(data: bytes) -> str:
    return data.hex(" ").upper()


def _line(offset: int, data: bytes, text: str) -> str:
    return f"[{offset:3d}] {_hex(data):<23} {text}"


def _value_text(item: DecodedElement) -> str:
    unit = item.definition.unit if item.definition else ""
    value = item.value
    if value is None:
        return item.note or "missing"
    if isinstance(value, tuple):
        places = item.definition.decimals if item.definition else 2
        shown = " ".join("—" if v is None else f"{v:.{places}f}" for v in value)
        return f"{shown} {unit}".rstrip()
    if isinstance(value, timedelta):
        return f"{value} ({'hourly 5-minute combination' if not value else 'step'})"
    if isinstance(value, bytes):
        try:
            return repr(value.decode("gbk"))
        except UnicodeDecodeError:
            return f"{len(value)} bytes"
    if item.definition is not None and item.definition.kind == "status" and isinstance(
            value, int):
        bits = [STATUS_BITS.get(b, f"bit {b}") for b in range(32) if value >> b & 1]
        return f"{value:08X}H: " + ("; ".join(bits) if bits else "all normal")
    text = f"{value:.{item.decimals}f}" if isinstance(value, float) else str(value)
    extra = f", {item.note}" if item.note else ""
    return f"{text} {unit}".rstrip() + extra


def _describe_element(item: DecodedElement, raw_frame: bytes, end: int) -> str:
    name = item.definition.name if item.definition else "not in table C.1"
    form = (f" N(·,{item.decimals}) in {item.data_definition >> 3} B" if (
        item.definition is None or item.definition.kind == "number") else "")
    shown = raw_frame[item.offset:end]
    label = item.definition.label if item.definition else item.mnemonic
    return _line(item.offset, shown, f"{label} {name}{form}: {_value_text(item)}")


def describe(frame: bytes | bytearray | str) -> list[str]:
    """Print a frame field by field: offsets, raw bytes and meaning, CRC computed vs received.

    Accepts bytes or hex text (spaces, '-' and ':' allowed). A damaged frame is described as
    far as it goes, then an ``error:`` line says what is wrong and where.
    """
    raw = _hexdata(frame)
    lines = [f"frame: {len(raw)} bytes"]
    try:
        _describe_into(raw, lines)
    except FrameError as exc:
        lines.append(f"error: {exc}")
    return lines


def _describe_into(raw: bytes, lines: list[str]) -> None:
    if raw[:2] != SOH_HEX:
        raise FrameError("start", 0, f"expected 7E 7E, got {_hex(raw[:2]) or 'nothing'}")
    lines.append(_line(0, raw[:2], "start, HEX/BCD encoding"))
    if len(raw) < HEADER_SIZE:
        raise FrameError("header", len(raw), f"short frame: the header needs {HEADER_SIZE} "
                         f"bytes, there are {len(raw)}")
    downlink = raw[11] >> 4 == 0x8
    if downlink:
        lines.append(_line(2, raw[2:7], f"station address {raw[2:7].hex().upper()}"))
        lines.append(_line(7, raw[7:8], f"centre address {raw[7]}"))
    else:
        lines.append(_line(2, raw[2:3], f"centre address {raw[2]}"))
        lines.append(_line(3, raw[3:8], f"station address {raw[3:8].hex().upper()}"))
    lines.append(_line(8, raw[8:10], f"password {raw[8:10].hex().upper()}"))
    function = raw[10]
    lines.append(_line(10, raw[10:11], f"function {function:02X}H "
                       f"{FUNCTION_NAMES.get(function, '(not in annex B)')}"))
    direction = raw[11] >> 4
    length = int.from_bytes(raw[11:13], "big") & 0x0FFF
    shown = {0: "uplink (station to centre)", 8: "downlink (centre to station)"}.get(
        direction, f"{direction:X}: invalid")
    lines.append(_line(11, raw[11:13], f"direction {shown}, body length {length}"))
    if direction not in (0, 8):
        raise FrameError("direction", 11, f"{direction:X} is neither 0 nor 8")
    lines.append(_line(13, raw[13:14], CONTROL_NAMES.get(raw[13], f"{raw[13]:02X}H: invalid "
                                                         "start of body")))
    end_at = HEADER_SIZE + length
    if len(raw) != end_at + 3:
        raise FrameError("length", 11, f"the length field says {length} body bytes, so the "
                         f"frame is {end_at + 3} bytes; it is {len(raw)}")
    body_at = HEADER_SIZE
    if raw[13] == SYN:
        word = int.from_bytes(raw[14:17], "big")
        lines.append(_line(14, raw[14:17], f"packets: total {word >> 12}, this one "
                           f"{word & 0xFFF}"))
        body_at += 3
    body = raw[body_at:end_at]
    try:
        _describe_body(raw, body, body_at, function, downlink, lines)
    except FrameError as exc:
        lines.append(f"error: {exc}")
    end = raw[end_at]
    lines.append(_line(end_at, raw[end_at:end_at + 1],
                       CONTROL_NAMES.get(end, f"{end:02X}H: not an end character")))
    computed, received = crc16(raw[:-2]), int.from_bytes(raw[-2:], "big")
    verdict = "OK" if computed == received else "MISMATCH"
    if computed != received and computed.to_bytes(2, "little") == raw[-2:]:
        verdict += " (the sender put the low byte first)"
    lines.append(_line(len(raw) - 2, raw[-2:],
                       f"CRC received {received:04X}, computed {computed:04X}: {verdict}"))


def _describe_body(raw: bytes, body: bytes, base: int, function: int, downlink: bool,
                   lines: list[str]) -> None:
    if not body:
        lines.append("      (empty body)")
        return
    if len(body) < 8:
        raise FrameError("serial and send time", base,
                         f"{len(body)} bytes, the body starts with 8")
    serial = int.from_bytes(body[:2], "big")
    lines.append(_line(base, body[:2], f"serial number {serial}"))
    sent = decode_time(body[2:8], "send time", base + 2)
    lines.append(_line(base + 2, body[2:8], f"send time {sent:%Y-%m-%d %H:%M:%S} Beijing"))
    if downlink:
        _describe_downlink_rest(body, base, function, lines)
        return
    index = 8
    while index < len(body):
        if body[index:index + 2] in (b"\xf1\xf1", b"\xf0\xf0"):
            index = _describe_guides(body, index, base, lines)
        else:
            item, index = decode_element(body, index, None, base)
            lines.append(_describe_element(item, raw, base + index))


def _describe_guides(body: bytes, index: int, base: int, lines: list[str]) -> int:
    guide = body[index:index + 2]
    need = 8 if guide == b"\xf1\xf1" else 7
    if index + need > len(body):
        raise FrameError("station address" if need == 8 else "observation time",
                         base + index, f"{_hex(guide)} needs {need - 2} more bytes")
    if guide == b"\xf1\xf1":
        lines.append(_line(base + index, body[index:index + 7],
                           f"station address {body[index + 2:index + 7].hex().upper()}"))
        category = body[index + 7]
        lines.append(_line(base + index + 7, body[index + 7:index + 8],
                           f"category {CATEGORY_NAMES.get(category, f'{category:02X}H')}"))
        return index + 8
    observed = decode_time(body[index + 2:index + 7], "observation time", base + index + 2)
    lines.append(_line(base + index, body[index:index + 7],
                       f"observation time {observed:%Y-%m-%d %H:%M} Beijing"))
    return index + 7


def _describe_downlink_rest(body: bytes, base: int, function: int, lines: list[str]) -> None:
    rest = body[8:]
    if not rest:
        return
    if function == Function.QUERY_ELEMENTS:
        index = 0
        while index < len(rest):
            size = 3 if rest[index] == 0xFF else 2
            ident = int.from_bytes(rest[index:index + size - 1], "big")
            known = BY_IDENTIFIER.get(ident)
            lines.append(_line(base + 8 + index, rest[index:index + size],
                               f"asks for {known.label if known else f'{ident:02X}H'}"))
            index += size
        return
    lines.append(_line(base + 8, rest[:8], f"command parameters, {len(rest)} bytes"))
