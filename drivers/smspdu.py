"""SMS PDUs for a 4G modem in PDU mode (AT+CMGF=0): 3GPP TS 23.040 and TS 23.038.

The gateway sends alarm texts through a USB modem (Quectel EC20/EC25/EG25, SIMCom SIM7600,
Huawei) and reads the keepers' replies from it. In PDU mode the modem takes and gives
whole transfer-layer PDUs in hex, which is the only way to send Chinese text: TS 23.038's
GSM 7-bit default alphabet has no Chinese, so such texts go as UCS2 (70 characters in one
message, 67 per part when a concatenation header takes 6 octets of the 140), and texts the
default alphabet can carry go as GSM 7-bit (160, or 153 per part).

The encoding itself is python-gsmmodem-new's ``gsmmodem.pdu`` (GSM 7-bit tables with the
extension table, septet packing, address fields, the 8-bit concatenation header of
TS 23.040 §9.2.3.24.1, SMS-DELIVER decoding). Around it this module keeps what the library
leaves to its caller or gets wrong:

* the TPDU length that AT+CMGS needs: the library's count assumes an empty service-centre
  address, so with a configured SMSC it would be wrong and the modem would wait for
  octets that never come (TS 27.005 §3.5.1: the length excludes the SMSC address octets);
* characters outside the Basic Multilingual Plane (a rare character in a place name, an
  emoji in a reply): UCS2 cannot carry them and the library crashes on them, so they go
  as UTF-16 surrogate pairs, as handsets send and read them; replies are decoded the same
  way, after their parts are joined, since a pair may be split between two parts;
* clear errors (``PduError``) for a bad phone number, an empty text, a text too long for
  the allowed number of parts, or a PDU that does not decode.

Only the test equipment (simulator/modem.py) needs ``decode_submit`` and
``encode_deliver``: they are here so every PDU rule of the project lives in one place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Literal

# The library's package __init__ also imports its threaded modem class (and pyserial,
# which the daemon loads anyway); importing it starts no thread. Measured in the commit
# that added it: +2.3 ms and +0.34 MiB RSS on top of the daemon's own imports.
from gsmmodem import pdu as _lib

Encoding = Literal["gsm7", "ucs2"]

# TS 23.040 §9.1.2.5: an address field carries at most 20 digits.
_PHONE = re.compile(r"^\+?[0-9]{3,20}$")
_PHONE_SEPARATORS = re.compile(r"[\s\-()]")
_HEX = re.compile(r"^(?:[0-9A-Fa-f]{2})+$")
_DCS_UCS2 = 0x08
_MTI_MASK = 0x03
_MTI_DELIVER = 0x00
_MTI_SUBMIT = 0x01
_TP_UDHI = 0x40
_TP_MMS = 0x04  # SMS-DELIVER: no more messages are waiting at the centre


class PduError(ValueError):
    """A text, number or PDU that cannot be encoded or decoded; the message says why."""


@dataclass(frozen=True, slots=True)
class SubmitPart:
    """One SMS-SUBMIT PDU, ready for ``AT+CMGS=<tpdu_length>`` and the hex after the prompt."""

    hex: str
    tpdu_length: int


@dataclass(frozen=True, slots=True)
class SubmitPlan:
    """How one text goes out: its alphabet and one PDU per part, in order."""

    encoding: Encoding
    parts: tuple[SubmitPart, ...]
    concat_reference: int | None  # the concatenation header's reference; None for one part


@dataclass(frozen=True, slots=True)
class Concat:
    """A TS 23.040 concatenation header: part ``number`` (from 1) of ``count``."""

    reference: int
    count: int
    number: int


@dataclass(frozen=True, slots=True)
class DeliverPdu:
    """A decoded SMS-DELIVER: one text (or one part of one) that reached the modem.

    ``text`` of a part may end or start with half of a UTF-16 surrogate pair; pass the
    parts' texts to ``join_parts`` rather than concatenating them.
    """

    sender: str
    text: str
    sent_at: datetime  # the service centre's time stamp, with the network's UTC offset
    concat: Concat | None
    smsc: str | None


@dataclass(frozen=True, slots=True)
class SubmitPdu:
    """A decoded SMS-SUBMIT (what the gateway asked the modem to send)."""

    destination: str
    text: str
    encoding: Encoding
    concat: Concat | None
    message_reference: int
    smsc: str | None


def normalise_phone(phone: str, what: str = "phone number") -> str:
    """``phone`` without spaces, dashes or brackets; PduError unless 3-20 digits after an
    optional ``+`` (international format)."""
    if not isinstance(phone, str):
        raise PduError(f"{what} must be text, got {type(phone).__name__}")
    compact = _PHONE_SEPARATORS.sub("", phone)
    if not _PHONE.match(compact):
        raise PduError(
            f"{what} {phone!r} is not a phone number: use 3 to 20 digits, "
            "with a leading + for the international format (e.g. +8613800138000)"
        )
    return compact


def fits_gsm7(text: str) -> bool:
    """Whether the GSM 7-bit default alphabet and its extension table carry ``text``."""
    try:
        _lib.encodeGsm7(text)
    except ValueError:
        return False
    return "\x1b" not in text  # the escape code is no character of its own


def encode_submit(
    phone: str,
    text: str,
    concat_reference: int,
    smsc: str | None = None,
    max_parts: int = 10,
) -> SubmitPlan:
    """The SMS-SUBMIT PDUs that send ``text`` to ``phone``.

    GSM 7-bit when the text allows it, otherwise UCS2; split into concatenated parts when
    one message cannot hold it. ``concat_reference`` (0-255) ties the parts together on
    the handset, so consecutive long texts to one number must use different references.
    No status report is requested: acknowledgement is by the keeper's reply.
    """
    destination = normalise_phone(phone)
    centre = normalise_phone(smsc, "SMSC") if smsc is not None else None
    if not isinstance(text, str) or not text:
        raise PduError("the text to send is empty")
    if not 0 <= concat_reference <= 255:
        raise PduError(f"concatenation reference {concat_reference} is outside 0-255")
    encoding: Encoding = "gsm7" if fits_gsm7(text) else "ucs2"
    units = _utf16_units(text) if encoding == "ucs2" else text
    try:
        pdus = _lib.encodeSmsSubmitPdu(
            destination, units, reference=concat_reference, smsc=centre,
            requestStatusReport=False,
        )
    except (ValueError, TypeError, IndexError) as exc:
        raise PduError(f"cannot encode the text for {destination}: {exc}") from None
    if len(pdus) > max_parts:
        raise PduError(
            f"the text needs {len(pdus)} {encoding} parts, more than max_parts={max_parts} "
            f"({len(text)} characters)"
        )
    parts = []
    for item in pdus:
        raw = bytes(item.data)
        # The SMSC address field is its length octet plus that many octets.
        parts.append(SubmitPart(raw.hex().upper(), len(raw) - 1 - raw[0]))
    return SubmitPlan(encoding, tuple(parts), concat_reference if len(parts) > 1 else None)


def decode_deliver(pdu_hex: str) -> DeliverPdu:
    """An SMS-DELIVER PDU as listed by AT+CMGL/AT+CMGR in PDU mode (SMSC address first)."""
    result = _decode(pdu_hex)
    if result.get("type") != "SMS-DELIVER":
        raise PduError(f"PDU is an {result.get('type', 'unknown type')}, not an SMS-DELIVER")
    sent_at = result.get("time")
    if not isinstance(sent_at, datetime):
        raise PduError("SMS-DELIVER PDU has no service-centre time stamp")
    return DeliverPdu(
        sender=str(result.get("number") or ""),
        text=str(result.get("text", "")),
        sent_at=_plain_timezone(sent_at),
        concat=_concat(result),
        smsc=result.get("smsc"),
    )


def decode_submit(pdu_hex: str) -> SubmitPdu:
    """An SMS-SUBMIT PDU as written after the AT+CMGS prompt (SMSC address first)."""
    result = _decode(pdu_hex)
    if result.get("type") != "SMS-SUBMIT":
        raise PduError(f"PDU is an {result.get('type', 'unknown type')}, not an SMS-SUBMIT")
    raw = bytes.fromhex(pdu_hex)
    tpdu = raw[1 + raw[0]:]
    dcs_index = 2 + 2 + (tpdu[2] + 1) // 2 + 1  # FO, MR, DA length + TOA + digits, PID
    encoding: Encoding = "ucs2" if tpdu[dcs_index] & 0x0C == _DCS_UCS2 else "gsm7"
    return SubmitPdu(
        destination=str(result.get("number") or ""),
        text=str(result.get("text", "")),
        encoding=encoding,
        concat=_concat(result),
        message_reference=int(result.get("reference", 0)),
        smsc=result.get("smsc"),
    )


def encode_deliver(
    sender: str, text: str, sent_at: datetime, concat_reference: int = 0
) -> list[str]:
    """SMS-DELIVER PDUs (hex, SMSC address first) carrying ``text`` from ``sender``.

    For the simulated modem. Built from the library's SMS-SUBMIT of the same text: the
    two share the address, PID, DCS and user-data encoding (TS 23.040 §9.2.2.1/§9.2.2.2);
    the header differs (no TP-MR, the originating address in place of the destination,
    the centre's time stamp after the DCS).
    """
    if sent_at.tzinfo is None:
        raise PduError("the time stamp of an incoming text needs a UTC offset")
    plan = encode_submit(sender, text, concat_reference, max_parts=255)
    stamp = _encode_timestamp(sent_at)
    out = []
    for part in plan.parts:
        raw = bytes.fromhex(part.hex)
        sca, tpdu = raw[: 1 + raw[0]], raw[1 + raw[0]:]
        first, address_digits = tpdu[0], tpdu[2]
        address_end = 3 + 1 + (address_digits + 1) // 2
        address = tpdu[2:address_end]
        pid, dcs, rest = tpdu[address_end], tpdu[address_end + 1], tpdu[address_end + 2:]
        deliver_first = _MTI_DELIVER | _TP_MMS | (first & _TP_UDHI)
        out.append((sca + bytes([deliver_first]) + address + bytes([pid, dcs]) + stamp
                    + rest).hex().upper())
    return out


def join_parts(texts: list[str]) -> str:
    """The parts' texts as one, with surrogate pairs (split or not) made characters again.

    A half pair that finds no partner becomes U+FFFD rather than an unencodable string.
    """
    joined = "".join(texts)
    return joined.encode("utf-16-be", "surrogatepass").decode("utf-16-be", "replace")


def _utf16_units(text: str) -> str:
    """``text`` as one str item per UTF-16 code unit, so the library's UCS2 writer (two
    octets per item) emits surrogate pairs for characters beyond U+FFFF."""
    if all(ord(c) <= 0xFFFF for c in text):
        return text
    raw = text.encode("utf-16-be")
    return "".join(chr(int.from_bytes(raw[i:i + 2], "big")) for i in range(0, len(raw), 2))


def _decode(pdu_hex: str) -> dict[str, Any]:
    if not isinstance(pdu_hex, str) or not _HEX.match(pdu_hex.strip()):
        shown = pdu_hex if isinstance(pdu_hex, str) else type(pdu_hex).__name__
        raise PduError(f"PDU {shown[:40]!r} is not an even number of hex digits")
    pdu_hex = pdu_hex.strip()
    raw = bytes.fromhex(pdu_hex)
    if len(raw) < 2 or 1 + raw[0] >= len(raw):
        raise PduError(f"PDU {pdu_hex[:40]!r} is too short for its SMSC address")
    mti = raw[1 + raw[0]] & _MTI_MASK
    if mti not in (_MTI_DELIVER, _MTI_SUBMIT):
        kind = "SMS-STATUS-REPORT or SMS-COMMAND" if mti == 0x02 else "reserved type"
        raise PduError(f"PDU is an {kind}, not a text")
    try:
        result: dict[str, Any] = _lib.decodeSmsPdu(pdu_hex)
    except Exception as exc:  # the library raises StopIteration, IndexError, its own errors
        raise PduError(
            f"PDU {pdu_hex[:40]!r}... does not decode: {type(exc).__name__} {exc}"
        ) from None
    if isinstance(result.get("text"), str):
        result["text"] = result["text"] if result.get("udh") else join_parts([result["text"]])
    return result


def _concat(result: dict[str, Any]) -> Concat | None:
    for element in result.get("udh") or ():
        if isinstance(element, _lib.Concatenation) and getattr(element, "parts", 0):
            return Concat(element.reference, element.parts, element.number)
    return None


def _plain_timezone(stamp: datetime) -> datetime:
    """The library's own tzinfo class as a standard fixed-offset timezone."""
    offset = stamp.utcoffset() or timedelta(0)
    return stamp.replace(tzinfo=UTC if not offset else timezone(offset))


def _encode_timestamp(stamp: datetime) -> bytes:
    """TS 23.040 §9.2.3.11: YYMMDDhhmmss and the offset in quarter hours, semi-octets
    swapped, the offset's sign in bit 3 of its second semi-octet."""
    offset = stamp.utcoffset() or timedelta(0)
    quarters = int(abs(offset.total_seconds()) // 900)
    digits = stamp.strftime("%y%m%d%H%M%S") + f"{quarters:02d}"
    octets = bytearray(int(digits[i + 1] + digits[i], 16) for i in range(0, 14, 2))
    if offset < timedelta(0):
        octets[6] |= 0x08
    return bytes(octets)
