"""An SL 651-2014 frame field by field, for the field engineer comparing with a centre's log
(``edge sl651 decode HEX``)."""

from __future__ import annotations

from datetime import timedelta

from edge.channels.sl651_codec import (
    CATEGORY_NAMES,
    CONTROL_NAMES,
    FUNCTION_NAMES,
    HEADER_SIZE,
    SOH_HEX,
    STATUS_BITS,
    SYN,
    FrameError,
    Function,
    crc16,
    decode_time,
)
from edge.channels.sl651_elements import BY_IDENTIFIER
from edge.channels.sl651_frames import hex_data
from edge.channels.sl651_values import DecodedElement, decode_element

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
    raw = hex_data(frame)
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
