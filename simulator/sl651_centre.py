"""An SL 651-2014 centre (中心站) for tests and the demo, written from the standard's text alone.

Provincial hydrological centres take our reservoir stations' reports over TCP. This one
listens on 127.0.0.1, splits the byte stream into HEX/BCD frames, checks each CRC, decodes
bodies and elements, records them, and answers as §6.3 says a centre answers: a
confirmation downlink (same function code, body = the report's serial + the centre's send
time, ending EOT) for every valid report, nothing for a keep-alive or an invalid frame.
Modes make it misbehave the ways real centres do: never confirm, confirm with a broken
CRC, or answer NAK. It can also send the 37H real-time query.

``edge simulate`` runs one for each centre of the site's ``sl651`` section that listens on
loopback (``serve_centres``), logging every report it confirms, so the demo shows what a
provincial platform receives.

It deliberately shares no code with the codec (edge/channels/sl651_*.py), so a mistake made twice
cannot pass: its CRC is the standard's polynomial X^16+X^15+X^2+1 run most-significant-bit
first on bit-reflected bytes (the codec runs the reflected 0xA001 form), and it decodes
BCD through hex text.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import structlog

if TYPE_CHECKING:
    from edge.config import GatewaySettings

log = structlog.get_logger("simulator.sl651_centre")

BEIJING = timezone(timedelta(hours=8))
EOT, ESC, ENQ, ACK, NAK, ETX, ETB, STX = 0x04, 0x1B, 0x05, 0x06, 0x15, 0x03, 0x17, 0x02
KEEP_ALIVE, QUERY_REALTIME = 0x2F, 0x37
Mode = Literal["confirm", "silent", "bad_crc", "nak"]

# Mnemonics of annex C for the elements reservoir stations send; others are keyed "xxH".
MNEMONICS: dict[int, str] = {
    0x02: "AI", 0x03: "C", 0x04: "DRxnn", 0x09: "GH", 0x0E: "H", 0x1A: "P1", 0x1B: "P2",
    0x1C: "P3", 0x1D: "P6", 0x1E: "P12", 0x1F: "PD", 0x20: "PJ", 0x21: "PN01", 0x22: "PN05",
    0x23: "PN10", 0x24: "PN30", 0x25: "PR", 0x26: "PT", 0x27: "Q", 0x30: "QA", 0x38: "VT",
    0x39: "Z", 0x3A: "ZB", 0x3B: "ZU", 0x45: "ZT", 0xF4: "DRP",
    **{0xF5 + i: f"DRZ{i + 1}" for i in range(8)},
    **{0x58 + i: f"WP{i + 1}" for i in range(8)},
}


def _reflect(value: int, width: int) -> int:
    out = 0
    for _ in range(width):
        out = out << 1 | value & 1
        value >>= 1
    return out


def centre_crc(data: bytes) -> int:
    """CRC of tables 11/20: generator X^16+X^15+X^2+1 (8005H), register preset to FFFFH,
    bytes and result bit-reflected (the Modbus form the standard's polynomial implies)."""
    register = 0xFFFF
    for byte in data:
        register ^= _reflect(byte, 8) << 8
        for _ in range(8):
            register = ((register << 1) ^ 0x8005) if register & 0x8000 else register << 1
            register &= 0xFFFF
    return _reflect(register, 16)


def _bcd_time(text: str) -> datetime:
    """YYMMDDhhmm[ss] hex text to a Beijing datetime."""
    parts = [int(text[i:i + 2]) for i in range(0, len(text), 2)]
    parts += [0] * (6 - len(parts))
    return datetime(2000 + parts[0], parts[1], parts[2], parts[3], parts[4], parts[5],
                    tzinfo=BEIJING)


def _number(digits_hex: str, decimals: int) -> float | int | None:
    if set(digits_hex) <= {"F"} or set(digits_hex) == {"A"}:
        return None  # F fill (§6.6.4.4 d); AA fill as some stations send
    sign = 1
    if digits_hex.startswith("FF") and len(digits_hex) > 2:
        sign, digits_hex = -1, digits_hex[2:]  # §6.6.3.3 a
    if not digits_hex.isdigit():
        raise ValueError(f"{digits_hex} is not BCD")
    whole = sign * int(digits_hex)
    return whole if decimals == 0 else whole / 10 ** decimals


def element_value(identifier: int, data_hex: str, decimals: int) -> Any:
    """One element's value from its data as hex text (annex C, table C.1)."""
    if identifier == 0xF4:  # 1-byte HEX per 5 minutes, 0.1 mm, FF invalid
        return tuple(None if data_hex[i:i + 2] == "FF" else int(data_hex[i:i + 2], 16) / 10
                     for i in range(0, len(data_hex), 2))
    if 0xF5 <= identifier <= 0xFC:  # 2-byte HEX per 5 minutes, 0.01 m, FFFF invalid
        return tuple(None if data_hex[i:i + 4] == "FFFF" else int(data_hex[i:i + 4], 16) / 100
                     for i in range(0, len(data_hex), 4))
    if identifier == 0x45:  # status word, 4 bytes HEX (table 58)
        return None if set(data_hex) == {"F"} else int(data_hex, 16)
    if identifier == 0x04:  # time step DDHHMM (table C.3)
        if set(data_hex) == {"F"}:
            return None
        return timedelta(days=int(data_hex[0:2]), hours=int(data_hex[2:4]),
                         minutes=int(data_hex[4:6]))
    return _number(data_hex, decimals)


@dataclass
class ReceivedReport:
    """One valid uplink frame as the centre understood it."""

    function: int
    serial: int
    sent: datetime
    station: str  # from the header
    centre: int
    password: int
    end: int
    raw: bytes
    body_station: str | None = None
    category: str | None = None  # the annex A letter, "K" for a reservoir
    observed: datetime | None = None  # the first observation time
    values: dict[str, Any] = field(default_factory=dict)  # by mnemonic, or "xxH"/"FFxxH"
    by_identifier: dict[int, Any] = field(default_factory=dict)
    observed_at: dict[int, datetime | None] = field(default_factory=dict)


def decode_uplink(frame: bytes) -> ReceivedReport:
    """Check and decode one uplink HEX/BCD frame; ValueError says what is wrong."""
    if frame[:2] != b"\x7e\x7e":
        raise ValueError("frame does not start with 7E 7E")
    if len(frame) < 17:
        raise ValueError(f"frame of {len(frame)} bytes is shorter than any frame")
    received_crc = frame[-2] << 8 | frame[-1]  # high byte first (table 11)
    if centre_crc(frame[:-2]) != received_crc:
        raise ValueError(f"CRC {received_crc:04X} does not match {centre_crc(frame[:-2]):04X}")
    if frame[11] & 0xF0:
        raise ValueError("direction bits say downlink; a centre only takes uplinks")
    length = (frame[11] & 0x0F) << 8 | frame[12]
    if len(frame) != 17 + length:
        raise ValueError(f"length field {length} does not match a {len(frame)}-byte frame")
    if frame[13] != STX:
        raise ValueError("only single-packet (STX) frames are handled by this centre")
    body_hex = frame[14:14 + length].hex().upper()
    report = ReceivedReport(
        function=frame[10], serial=int(body_hex[0:4], 16), sent=_bcd_time(body_hex[4:16]),
        station=frame[3:8].hex().upper(), centre=frame[2], password=frame[8] << 8 | frame[9],
        end=frame[14 + length], raw=frame)
    pos, observed = 16, None
    while pos < len(body_hex):
        if body_hex.startswith("F1F1", pos):
            report.body_station = body_hex[pos + 4:pos + 14]
            report.category = chr(int(body_hex[pos + 14:pos + 16], 16))
            pos += 16
            continue
        if body_hex.startswith("F0F0", pos):
            observed = _bcd_time(body_hex[pos + 4:pos + 14])
            report.observed = report.observed or observed
            pos += 14
            continue
        width = 4 if body_hex.startswith("FF", pos) else 2
        identifier = int(body_hex[pos:pos + width], 16)
        spec = int(body_hex[pos + width:pos + width + 2], 16)
        pos += width + 2
        if identifier in (0xF2, 0xF3, 0xFD):  # the rest of the body is their data
            value: Any = bytes.fromhex(body_hex[pos:])
            pos = len(body_hex)
        else:
            count, decimals = spec >> 3, spec & 0x07
            data_hex = body_hex[pos:pos + 2 * count]
            if len(data_hex) != 2 * count:
                raise ValueError(f"element {identifier:02X}H runs past the body")
            pos += 2 * count
            value = element_value(identifier, data_hex, decimals)
        key = MNEMONICS.get(identifier, f"{identifier:02X}H")
        report.values.setdefault(key, value)
        report.by_identifier.setdefault(identifier, value)
        report.observed_at.setdefault(identifier, observed)
    return report


def downlink(station: str, centre: int, password: int, function: int, body: bytes,
             end: int) -> bytes:
    """A downlink frame (table 21): station address first, direction bits 1000."""
    head = (b"\x7e\x7e" + bytes.fromhex(station) + bytes([centre])
            + password.to_bytes(2, "big") + bytes([function])
            + (0x8000 | len(body)).to_bytes(2, "big") + bytes([STX]))
    unsigned = head + body + bytes([end])
    return unsigned + centre_crc(unsigned).to_bytes(2, "big")


def _now_bcd() -> bytes:
    return bytes.fromhex(datetime.now(BEIJING).strftime("%y%m%d%H%M%S"))


class Sl651Centre:
    """A centre on 127.0.0.1:port: ``await start()``, send frames, ``await wait_for(n)``."""

    def __init__(self, *, address: int = 1, mode: Mode = "confirm", end: int = EOT,
                 port: int = 0, host: str = "127.0.0.1",
                 on_report: Callable[[ReceivedReport], None] | None = None) -> None:
        self.address = address
        self.mode: Mode = mode
        self.end = end  # EOT (station may leave) or ESC (stay online) for confirmations
        self.received: list[ReceivedReport] = []
        self.rejected: list[str] = []
        self.sent: list[bytes] = []
        self.connections = 0
        self.port = port  # 0: any free port; kept, so a restarted centre is where it was
        self.host = host
        self.on_report = on_report
        self._server: asyncio.base_events.Server | None = None
        self._writers: list[tuple[asyncio.StreamWriter, ReceivedReport | None]] = []
        self._changed = asyncio.Condition()

    def set_mode(self, mode: Mode, end: int | None = None) -> None:
        """Switch how reports are answered: confirm, silent, bad_crc or nak."""
        self.mode = mode
        if end is not None:
            self.end = end

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        await self.drop_connections()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def drop_connections(self) -> None:
        """Close every station's connection, as a centre restart would."""
        for writer, _ in self._writers:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()
        self._writers.clear()

    async def __aenter__(self) -> Sl651Centre:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def reports(self, function: int | None = None) -> list[ReceivedReport]:
        """Received frames, keep-alives excluded unless asked for by function code."""
        if function is None:
            return [r for r in self.received if r.function != KEEP_ALIVE]
        return [r for r in self.received if r.function == function]

    async def wait_for(self, n: int, timeout: float = 15.0,
                       function: int | None = None) -> list[ReceivedReport]:
        """Wait until ``n`` reports (of ``function``, or any but keep-alives) have arrived."""
        async with self._changed:
            try:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: len(self.reports(function)) >= n), timeout)
            except TimeoutError as exc:
                got = [f"{r.function:02X}H#{r.serial}" for r in self.received]
                raise TimeoutError(f"centre got {got} (rejected {self.rejected}) within "
                                   f"{timeout}s, waited for {n}") from exc
        return self.reports(function)

    async def query_realtime(self, serial: int = 0) -> bytes:
        """Send the 37H query (table 42, ENQ) to the most recently heard station."""
        for writer, last in reversed(self._writers):
            if last is not None and not writer.is_closing():
                frame = downlink(last.station, self.address, last.password, QUERY_REALTIME,
                                 serial.to_bytes(2, "big") + _now_bcd(), ENQ)
                await self._send(writer, frame)
                return frame
        raise RuntimeError("no station has reported on an open connection yet")

    async def _send(self, writer: asyncio.StreamWriter, frame: bytes) -> None:
        self.sent.append(frame)
        writer.write(frame)
        with contextlib.suppress(ConnectionError):
            await writer.drain()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append((writer, None))
        buffer = bytearray()
        try:
            while chunk := await reader.read(4096):
                buffer += chunk
                while True:
                    start = buffer.find(b"\x7e\x7e")
                    if start < 0:
                        if buffer.rstrip(b"\x7e"):
                            self.rejected.append(f"garbage {bytes(buffer).hex()}")
                        del buffer[:-1 if buffer.endswith(b"\x7e") else len(buffer)]
                        break
                    if start:
                        self.rejected.append(f"garbage {bytes(buffer[:start]).hex()}")
                        del buffer[:start]
                    if len(buffer) < 14:
                        break
                    size = 17 + ((buffer[11] & 0x0F) << 8 | buffer[12])
                    if len(buffer) < size:
                        break
                    frame = bytes(buffer[:size])
                    del buffer[:size]
                    report = await self._handle(frame, writer)
                    if report is not None:
                        self._writers = [(w, report if w is writer else r)
                                         for w, r in self._writers]
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers = [(w, r) for w, r in self._writers if w is not writer]
            writer.close()

    async def _handle(self, frame: bytes, writer: asyncio.StreamWriter) -> ReceivedReport | None:
        try:
            report = decode_uplink(frame)
        except (ValueError, IndexError) as exc:
            # §6.3.1.2 b: a centre does not answer a frame it cannot accept.
            self.rejected.append(f"{exc}: {frame.hex()}")
            async with self._changed:
                self._changed.notify_all()
            return None
        async with self._changed:
            self.received.append(report)
            self._changed.notify_all()
        if self.on_report is not None:
            self.on_report(report)
        if report.function == KEEP_ALIVE or self.mode == "silent":
            return report  # §6.6.4.2: keep-alives get no downlink
        end = ACK if report.end == ETB else self.end
        if self.mode == "nak":
            end = NAK
        reply = downlink(report.station, self.address, report.password, report.function,
                         report.serial.to_bytes(2, "big") + _now_bcd(), end)
        if self.mode == "bad_crc":
            reply = reply[:-2] + bytes([reply[-2] ^ 0xFF, reply[-1] ^ 0xFF])
        await self._send(writer, reply)
        return report


def _log_report(centre: int, report_log: Path | None) -> Callable[[ReceivedReport], None]:
    def logged(report: ReceivedReport) -> None:
        record = {"centre": centre, "function": f"{report.function:02X}H",
                  "serial": report.serial, "station": report.station,
                  "observed": report.observed.isoformat() if report.observed else None,
                  "values": dict(report.values)}
        log.info("sl651_centre_received", **record)
        if report_log is not None:  # the demo prints these beside what MQTT delivers
            with report_log.open("a", encoding="utf-8") as out:
                out.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
    return logged


async def serve_centres(settings: GatewaySettings, mode: Mode = "confirm",
                        report_log: Path | None = None) -> None:
    """Serve, until cancelled, each ``sl651`` centre of the site that listens on loopback;
    every report confirmed is logged, and appended to ``report_log`` as a JSON line."""
    section = settings.sl651
    local = [c for c in (section.centres if section else [])
             if c.host in ("127.0.0.1", "localhost", "::1")]
    centres = [Sl651Centre(address=c.address, mode=mode, port=c.port, host=c.host,
                           on_report=_log_report(c.address, report_log)) for c in local]
    for centre in centres:
        await centre.start()
        log.info("sl651_centre_listening", centre=centre.address, port=centre.port)
    try:
        await asyncio.Event().wait()
    finally:
        for centre in centres:
            await centre.stop()
