"""SL 651-2014 HEX/BCD frames (§6.2.3, §6.5, tables 11, 12, 20-23) and report bodies (§6.6).

Pure codec, no I/O: the SL 651 channel (edge/channels/sl651_link.py) owns the connection.
The frames of each report kind are edge/channels/sl651_reports.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from edge.channels.sl651_codec import (
    CONTROL_NAMES,
    DOWNLINK_ENDS,
    ETX,
    HEADER_SIZE,
    MAX_BODY,
    MAX_SERIAL,
    MIN_FRAME_SIZE,
    SOH_HEX,
    STX,
    SYN,
    UPLINK_ENDS,
    EncodeError,
    FrameError,
    Sl651Error,
    check_range,
    crc16,
    crc_bytes,
    decode_time,
    observation_time_bytes,
    send_time_bytes,
    station_bytes,
)
from edge.channels.sl651_elements import ElementData
from edge.channels.sl651_values import DecodedElement, Element, decode_element, encode_element

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
    check_range("centre address", frame.centre, 1, 255)
    check_range("password", frame.password, 0, 0xFFFF)
    check_range("function code", frame.function, 0, 0xFF)
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
        check_range("packet total", total, 1, 0xFFF)
        check_range("packet sequence", sequence, 1, 0xFFF)
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


def hex_data(text: bytes | bytearray | str) -> bytes:
    if isinstance(text, bytes | bytearray):
        return bytes(text)
    cleaned = "".join(text.split()).replace("-", "").replace(":", "")
    try:
        return bytes.fromhex(cleaned)
    except ValueError as exc:
        raise Sl651Error(f"not hex text: {text[:60]!r} ({exc})") from exc


def parse_frame(data: bytes | bytearray | str) -> Frame:
    """Exactly one frame from its bytes (or hex text); errors name the field and byte."""
    raw = hex_data(data)
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
    check_range("category", category, 0, 0xFF)
    out = bytearray(serial_and_time(serial, sent))
    out += b"\xf1\xf1" + station_bytes(station) + bytes([category])
    for observed, elements in groups:
        out += b"\xf0\xf0" + observation_time_bytes(observed)
        for item in elements:
            out += encode_element(item.definition, item.value, item.decimals)
    return bytes(out)


def serial_and_time(serial: int, sent: datetime | int, downlink_start: bool = False) -> bytes:
    low = 0 if downlink_start else 1
    check_range("serial number", serial, low, MAX_SERIAL)
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
