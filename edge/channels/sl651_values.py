"""SL 651-2014 element values: encoding and decoding one element with its data definition.

Negative values carry a leading FF byte, missing values are F-filled to the full length
(docs/sl651.md has the sources). The element table is edge/channels/sl651_elements.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from edge.channels.sl651_codec import EncodeError, FrameError, bcd_decode, bcd_encode, check_range
from edge.channels.sl651_elements import (
    _REST_OF_BODY,
    BY_IDENTIFIER,
    ElementData,
    ElementDef,
    ElementKind,
    Rain5,
    element,
)


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
        word = check_range(f"{what} status word", value, 0, 0xFFFFFFFF)
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
