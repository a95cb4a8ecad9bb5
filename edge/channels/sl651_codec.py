"""SL 651-2014 (水文监测数据通信规约) HEX/BCD codec: control characters, function codes, CRC, BCD.

Provincial and county hydrological platforms take telemetry from reservoir stations in the
frames of SL 651-2014, the water ministry's "hydrologic monitoring system data transmission
protocol". The pure codec of its HEX/BCD encoding is six modules, none doing I/O (the SL 651
output channel owns the connection): this one (control characters, function codes,
categories, errors, CRC, BCD, times, addresses), sl651_elements (the element table of
annex C), sl651_values (one element's value, §6.6.3, table 26), sl651_frames (frames,
§6.2, §6.5, tables 10-12, 20-21, and report bodies, §6.6), sl651_reports (each report kind
and the centre's confirmations, §6.3) and sl651_describe (a frame field by field).
docs/sl651.md settles, with sources, every point where the standard's text is terse or
open-source implementations disagree.

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

from datetime import datetime, timedelta, timezone
from enum import IntEnum

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


def check_range(what: str, value: int, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise EncodeError(f"{what} must be an integer in {low}..{high}, got {value!r}")
    return value


def next_serial(serial: int) -> int:
    """The serial number after ``serial``: uplink serials cycle 1..65535, skipping 0.

    §6.6.2.4: "上行报文流水号在01～65535之间循环"; 0 is reserved for frames the centre
    starts. A resent report keeps its serial; a keep-alive reuses the last report's serial
    without counting up (§6.6.4.2).
    """
    check_range("serial number", serial, 0, MAX_SERIAL)
    return 1 if serial >= MAX_SERIAL else serial + 1
