"""SL 651-2014 frames of the report kinds the channel sends, and the centre's replies.

Keep-alive 2FH, test 30H, timed 32H, added 33H, hourly 34H, the 37H answer; the centre's
confirmations (§6.3) read as the channel needs them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from edge.channels.sl651_codec import (
    ACK,
    ENQ,
    EOT,
    ESC,
    ETX,
    HEADER_SIZE,
    NAK,
    STX,
    SYN,
    EncodeError,
    FrameError,
    Function,
    decode_time,
    to_beijing,
)
from edge.channels.sl651_elements import element
from edge.channels.sl651_frames import (
    Frame,
    encode_frame,
    parse_frame,
    report_body,
    serial_and_time,
)
from edge.channels.sl651_values import Element, value_of

# --- Frames of the report kinds the channel sends -----------------------------------------


def keep_alive_frame(*, centre: int, station: str, password: int, serial: int,
                     sent: datetime | int) -> bytes:
    """2FH keep-alive (table 27): serial and send time only; the serial is the last data
    report's, not counted up (§6.6.4.2). Centres do not answer it."""
    body = serial_and_time(serial, sent)
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
    body = serial_and_time(serial, sent, downlink_start=True)
    return encode_frame(Frame(centre, station, password, Function.QUERY_REALTIME, body,
                              downlink=True, end=ENQ))


def confirmation_frame(function: int, *, centre: int, station: str, password: int,
                       serial: int, sent: datetime | int, end: int = EOT) -> bytes:
    """The centre's confirmation (tables 29, 33, 35, 37): downlink, the report's function
    code, body = the report's serial + the centre's send time, ending EOT (leave) or ESC
    (stay online); ACK confirms a packet that ended ETB."""
    if end not in (EOT, ESC, ACK):
        raise EncodeError(f"a confirmation ends EOT, ESC or ACK, not {end:02X}H")
    body = serial_and_time(serial, sent)
    return encode_frame(Frame(centre, station, password, function, body, downlink=True,
                              end=end))


def nak_frame(function: int, *, centre: int, station: str, password: int, serial: int,
              sent: datetime | int, packet: tuple[int, int] | None = None) -> bytes:
    """A downlink ending NAK: "send it again" (table 10). In M3 it names the bad packet
    (table 23: SYN start, total and the bad packet's sequence)."""
    body = serial_and_time(serial, sent, downlink_start=True)
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
