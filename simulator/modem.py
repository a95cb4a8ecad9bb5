"""A simulated 4G modem answering the AT dialogue of TS 27.005/27.007 on a pseudo-terminal.

Stands in for the site's USB modem (Quectel EC20/EC25, SIMCom SIM7600, Huawei) in tests and
in ``edge simulate``. The gateway opens ``link_path``, a symlink to a pty, as it would open
``/dev/serial/by-id/usb-Quectel_...``; the modem runs on a thread of its own, so it answers
whatever the gateway's event loop is doing.

It answers as a real modem does: echo on until ``ATE0``, ``OK``/``ERROR`` (numeric
``+CME ERROR``/``+CMS ERROR`` after ``AT+CMEE=1``), ``AT+CPIN?``, ``AT+CREG?``/``AT+CEREG?``
(and their unsolicited forms after ``AT+CREG=1``), ``AT+CSQ``, PDU mode only
(``AT+CMGF=0``), ``AT+CMGS`` with the ``> `` prompt, the PDU and Ctrl-Z (ESC cancels), and a
message store read with ``AT+CMGL``/``AT+CMGR`` and emptied with ``AT+CMGD``. Every SMS it
is asked to send is decoded and recorded (destination, text, parts, the message references
it gave); ``deliver()`` stores an incoming text and announces it with ``+CMTI``.

Faults: ``send_error`` (every send answered ``+CMS ERROR: 500``, or another code),
``silent`` (no answer at all, no echo), ``no_sim`` (``+CME ERROR: 10``), ``pin_locked``
(``+CPIN: SIM PIN``), ``not_registered`` (searching, or denied), and ``unplug()``/``plug()``/
``reboot()``: the link disappears (the gateway's open port fails) and comes back, with the
modem's settings back at their power-on values. ``interject()`` puts unsolicited or garbage
lines in the middle of the next send.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import select
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from drivers.smspdu import Concat, PduError, decode_submit, encode_deliver
from simulator.serialwire import SerialWire

CTRL_Z = 0x1A
# Returned by a part of the command table for a command it does not answer (compared by
# identity: an empty answer is never a real one).
_NOT_MINE: list[str] = []
ESC = 0x1B
# What a modem says of itself (TS 27.007 §5): invented, but in the form real ones use.
IDENTITY = {
    "I": "RESERVOIR-EDGE SIMULATED-LTE",
    "+CGMI": "RESERVOIR-EDGE", "+GMI": "RESERVOIR-EDGE",
    "+CGMM": "SIMULATED-LTE", "+GMM": "SIMULATED-LTE",
    "+CGMR": "SIMULATED-LTE_1.0", "+GMR": "SIMULATED-LTE_1.0",
    "+CGSN": "861234567890123", "+GSN": "861234567890123",
}
# Test commands (=?) and the ranges this modem supports.
SUPPORTED = {
    "+CSCS=?": '+CSCS: ("GSM","IRA","UCS2")',
    "+CMGF=?": "+CMGF: (0)",
    "+CPMS=?": '+CPMS: ("SM"),("SM"),("SM")',
    "+CNMI=?": "+CNMI: (0-2),(0-3),(0,2),(0-2),(0,1)",
    "+CREG=?": "+CREG: (0-2)",
    "+CEREG=?": "+CEREG: (0-2)",
    "+CMEE=?": "+CMEE: (0-2)",
    "+CMGL=?": "+CMGL: (0-4)",
    "+CSQ=?": "+CSQ: (0-31,99),(0-7,99)",
}


class ModemFault(StrEnum):
    SEND_ERROR = "send_error"
    SILENT = "silent"
    NO_SIM = "no_sim"
    PIN_LOCKED = "pin_locked"
    NOT_REGISTERED = "not_registered"


@dataclass(frozen=True, slots=True)
class SentPart:
    """One PDU the gateway sent with AT+CMGS, as the modem decoded it."""

    pdu: str
    tpdu_length: int
    destination: str
    text: str
    encoding: str
    concat: Concat | None
    reference: int  # the message reference (TP-MR) the modem answered with
    at: float  # time.monotonic() when the modem accepted it


@dataclass(slots=True)
class SentText:
    """The parts of one text to one destination, joined in part order."""

    destination: str
    encoding: str
    parts: list[SentPart]
    count: int

    @property
    def complete(self) -> bool:
        return len(self.parts) == self.count

    @property
    def text(self) -> str:
        ordered = sorted(self.parts, key=lambda p: p.concat.number if p.concat else 1)
        return "".join(p.text for p in ordered)

    @property
    def references(self) -> tuple[int, ...]:
        return tuple(p.reference for p in self.parts)


@dataclass(slots=True)
class StoredText:
    index: int
    pdu: str
    stat: int = 0  # 0 received unread, 1 received read

    @property
    def tpdu_length(self) -> int:
        raw = bytes.fromhex(self.pdu)
        return len(raw) - 1 - raw[0]


@dataclass(slots=True)
class _Settings:
    """What a modem forgets when it restarts."""

    echo: bool = True
    cmee: int = 0
    cmgf: int = 0
    cnmi_mt: int = 0
    creg_n: int = 0
    cereg_n: int = 0
    charset: str = "GSM"


@dataclass(order=True)
class _Scheduled:
    due: float
    order: int
    action: Callable[[], None] = field(compare=False)


class SimulatedModem:
    """A modem behind ``link_path``; see the module docstring. Use as a context manager."""

    def __init__(
        self,
        link_path: str | Path,
        *,
        rssi: int = 20,
        registration: int = 1,
        unregistered_stat: int = 2,
        send_error_code: int = 500,
        send_delay_s: float = 0.0,
        storage_size: int = 30,
        first_reference: int = 0,
        smsc: str = "+8613800100500",
    ) -> None:
        self.link_path = Path(link_path)
        self.rssi = rssi
        self.registration = registration  # <stat> while registered: 1 home, 5 roaming
        self.unregistered_stat = unregistered_stat  # with not_registered: 2 searching, 3 denied
        self.send_error_code = send_error_code
        self.send_delay_s = send_delay_s
        self.storage_size = storage_size
        self.smsc = smsc  # what AT+CSCA? says is stored on the SIM
        self.faults: set[ModemFault] = set()
        self.commands: list[str] = []  # every command line received, in order
        self.sent_parts: list[SentPart] = []
        self.cancelled_sends = 0
        self.boots = 1
        self._settings = _Settings()
        self._storage: dict[int, StoredText] = {}
        self._next_mr = first_reference
        self._deliver_reference = 0
        self._interjections: list[bytes] = []
        self._listing_noise: list[str] = []
        self._line = bytearray()
        self._pdu: bytearray | None = None  # PDU input after the prompt
        self._pdu_length = 0
        self._lock = threading.RLock()
        self._wire = SerialWire(self.link_path)
        self._fd = -1
        self._wake_r, self._wake_w = os.pipe()
        self._schedule: list[_Scheduled] = []
        self._order = itertools.count()
        self._stopping = False
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> SimulatedModem:
        self._wire.open()
        self._fd = os.open(self._wire.device_path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        self._thread = threading.Thread(
            target=self._run, name=f"modem:{self.link_path.name}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stopping = True
        os.write(self._wake_w, b"x")
        self._thread.join(5)
        self._thread = None
        self._wire.close()
        for fd in (self._fd, self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> SimulatedModem:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what a test does to it (any thread) ---------------------------------------------------

    def set_fault(self, fault: ModemFault | str, on: bool = True) -> None:
        with self._lock:
            fault = ModemFault(fault)
            was_registered = self._stat() in (1, 5)
            if on:
                self.faults.add(fault)
            else:
                self.faults.discard(fault)
            if (self._stat() in (1, 5)) != was_registered:
                self._report_registration()

    def clear_faults(self) -> None:
        for fault in list(self.faults):
            self.set_fault(fault, False)

    def set_registration(self, stat: int) -> None:
        """Registered with ``stat`` (1 home, 5 roaming); reported if the gateway asked."""
        with self._lock:
            self.registration = stat
            self._report_registration()

    def set_signal(self, rssi: int) -> None:
        with self._lock:
            self.rssi = rssi

    def unplug(self) -> None:
        """The USB link disappears: the gateway's open port fails with an I/O error."""
        with self._lock:
            self._wire.unplug()
            self._restart()

    def plug(self) -> None:
        with self._lock:
            self._wire.plug()

    @property
    def plugged(self) -> bool:
        return self._wire.plugged

    def reboot(self, down_s: float = 0.3, say_ready: bool = False) -> None:
        """Unplug now and come back after ``down_s`` (as a modem does when it resets)."""
        self.unplug()
        self._later(down_s, lambda: self._come_back(say_ready))

    def restart_in_place(self) -> None:
        """The modem resets but the port stays (a UART link): it says RDY and has forgotten
        its settings."""
        with self._lock:
            self._restart()
            self._emit("RDY")

    def deliver(self, sender: str, text: str, sent_at: datetime | None = None) -> list[int]:
        """A text from ``sender`` reaches the modem: stored (one index per part) and
        announced with +CMTI when the gateway asked for indications."""
        stamp = sent_at or datetime.now(UTC).replace(microsecond=0)
        with self._lock:
            self._deliver_reference = (self._deliver_reference + 1) % 256
            pdus = encode_deliver(sender, text, stamp, self._deliver_reference)
            indexes = []
            for pdu in pdus:
                index = next(
                    (i for i in range(1, self.storage_size + 1) if i not in self._storage), None
                )
                if index is None:
                    raise RuntimeError(f"simulated modem storage full ({self.storage_size})")
                self._storage[index] = StoredText(index, pdu)
                indexes.append(index)
                if self._settings.cnmi_mt == 1:
                    self._emit(f'+CMTI: "SM",{index}')
            return indexes

    def store_raw(self, pdu: str, stat: int = 0) -> int:
        """Put any PDU (even one that does not decode) into the store, unannounced."""
        with self._lock:
            index = next(i for i in range(1, self.storage_size + 1) if i not in self._storage)
            self._storage[index] = StoredText(index, pdu, stat)
            return index

    def interject(self, lines: Iterable[str | bytes]) -> None:
        """Lines to put between the next PDU and its +CMGS answer (URCs, garbage)."""
        with self._lock:
            for line in lines:
                data = line.encode("latin-1") if isinstance(line, str) else line
                self._interjections.append(b"\r\n" + data + b"\r\n")

    def interject_in_listing(self, lines: Iterable[str]) -> None:
        """Lines to put between each header and its PDU in the next AT+CMGL answer (a
        modem with a noisy line, or one that slips a result code in)."""
        with self._lock:
            self._listing_noise = list(lines)

    def emit(self, line: str | bytes) -> None:
        """An unsolicited line from the modem, now."""
        with self._lock:
            data = line.encode("latin-1") if isinstance(line, str) else line
            self._write(b"\r\n" + data + b"\r\n")

    def stored(self) -> dict[int, StoredText]:
        with self._lock:
            return dict(self._storage)

    @property
    def sent(self) -> list[SentText]:
        """Every text sent, its parts grouped by destination and concatenation reference."""
        with self._lock:
            parts = list(self.sent_parts)
        texts: list[SentText] = []
        open_groups: dict[tuple[str, int, int], SentText] = {}
        for part in parts:
            if part.concat is None:
                texts.append(SentText(part.destination, part.encoding, [part], 1))
                continue
            key = (part.destination, part.concat.reference, part.concat.count)
            group = open_groups.get(key)
            if group is None or group.complete:
                group = SentText(part.destination, part.encoding, [], part.concat.count)
                open_groups[key] = group
                texts.append(group)
            group.parts.append(part)
        return texts

    # -- the modem's thread ----------------------------------------------------------------

    def _later(self, delay: float, action: Callable[[], None]) -> None:
        with self._lock:
            heapq.heappush(
                self._schedule, _Scheduled(time.monotonic() + delay, next(self._order), action)
            )
        os.write(self._wake_w, b"x")

    def _come_back(self, say_ready: bool) -> None:
        self.plug()
        if say_ready:
            self.emit("RDY")

    def _run(self) -> None:
        while not self._stopping:
            now = time.monotonic()
            due: list[_Scheduled] = []
            with self._lock:
                while self._schedule and self._schedule[0].due <= now:
                    due.append(heapq.heappop(self._schedule))
                timeout = 0.05
                if self._schedule:
                    timeout = max(0.0, min(timeout, self._schedule[0].due - now))
            for item in due:
                item.action()
            try:
                ready, _, _ = select.select([self._fd, self._wake_r], [], [], timeout)
            except (OSError, ValueError):
                continue
            if self._wake_r in ready:
                os.read(self._wake_r, 1024)
            if self._fd in ready:
                try:
                    data = os.read(self._fd, 4096)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if data:
                    with self._lock:
                        self._receive(data)

    def _receive(self, data: bytes) -> None:
        if ModemFault.SILENT in self.faults:
            return
        if self._settings.echo:
            self._write(data)
        for byte in data:
            if self._pdu is not None:
                if byte == CTRL_Z:
                    pdu, self._pdu = bytes(self._pdu), None
                    self._submit(pdu.decode("ascii", errors="replace").strip())
                elif byte == ESC:
                    self._pdu = None
                    self.cancelled_sends += 1
                else:
                    self._pdu.append(byte)
                continue
            if byte in (0x0D, 0x0A):
                line, self._line = bytes(self._line).decode("ascii", "replace").strip(), bytearray()
                if line:
                    self.commands.append(line)
                    self._command(line)
            elif byte == ESC:
                self._line = bytearray()
            else:
                self._line.append(byte)

    def _command(self, line: str) -> None:
        upper = line.upper()
        if not upper.startswith("AT"):
            self._final_error(cme=4)
            return
        body = upper[2:]
        answer = self._answer(body)
        if answer is not None:
            self._respond(answer)

    def _answer(self, body: str) -> list[str] | None:
        """The lines answering AT<body> (a final result last), or None if the answer is
        given otherwise (the prompt, an error written already)."""
        for part in (self._answer_settings, self._answer_network, self._answer_messages):
            answer = part(body)
            if answer is not _NOT_MINE:
                return answer
        return ["ERROR"]

    def _answer_settings(self, body: str) -> list[str] | None:
        """Identity, echo, error reporting, character set, message format and storage."""
        settings = self._settings
        if body == "":
            return ["OK"]
        if body in ("E0", "E1", "E"):
            settings.echo = body == "E1"
            return ["OK"]
        if body in IDENTITY:
            return [IDENTITY[body], "OK"]
        if body in SUPPORTED:
            return [SUPPORTED[body], "OK"]
        if body == "+CFUN?":
            return ["+CFUN: 1", "OK"]
        if body in ("+CFUN=1", "+CFUN=1,0"):
            return ["OK"]  # full functionality, which it always has
        if body == "+CSCS?":
            return [f'+CSCS: "{settings.charset}"', "OK"]
        if body == "+CSCA?":
            return [f'+CSCA: "{self.smsc}",145', "OK"]
        if body == "+CPMS?" or body.startswith("+CPMS="):
            return self._storage_status(body)
        if body.startswith("+CMEE="):
            return self._set_int(body, "cmee", (0, 1, 2))
        if body.startswith("+CMGF="):
            if body == "+CMGF=1":
                return self._error_lines(cms=303)  # text mode is not simulated
            return self._set_int(body, "cmgf", (0,))
        if body == "+CMGF?":
            return [f"+CMGF: {settings.cmgf}", "OK"]
        if body.startswith("+CSCS="):
            charset = body[6:].strip('"')
            if charset not in ("GSM", "IRA", "UCS2"):
                return self._error_lines(cme=4)
            settings.charset = charset
            return ["OK"]
        if body.startswith("+CNMI="):
            values = body[6:].split(",")
            if len(values) < 2 or not values[1].strip().isdigit():
                return self._error_lines(cms=303)
            settings.cnmi_mt = int(values[1])
            return ["OK"]
        return _NOT_MINE

    def _storage_status(self, body: str) -> list[str]:
        used = len(self._storage)
        store = f'"SM",{used},{self.storage_size}'
        if body.startswith("+CPMS=") and not all(
            m.strip().strip('"') == "SM" for m in body[6:].split(",")
        ):
            return self._error_lines(cms=302)  # one store only: the SIM's
        if body == "+CPMS?":
            return [f"+CPMS: {store},{store},{store}", "OK"]
        return [f"+CPMS: {used},{self.storage_size},{used},{self.storage_size},"
                f"{used},{self.storage_size}", "OK"]

    def _answer_network(self, body: str) -> list[str] | None:
        """The SIM, the signal and the registration."""
        settings = self._settings
        if body == "+CIMI":
            return ["460001234567890", "OK"] if self._sim_ready() else self._error_lines(cme=10)
        if body == "+CPIN?":
            if ModemFault.NO_SIM in self.faults:
                return self._error_lines(cme=10)
            if ModemFault.PIN_LOCKED in self.faults:
                return ["+CPIN: SIM PIN", "OK"]
            return ["+CPIN: READY", "OK"]
        if body == "+CSQ":
            return [f"+CSQ: {self.rssi},99", "OK"]
        if body.startswith("+CREG="):
            return self._set_int(body, "creg_n", (0, 1, 2))
        if body.startswith("+CEREG="):
            return self._set_int(body, "cereg_n", (0, 1, 2))
        if body == "+CREG?":
            return [f"+CREG: {settings.creg_n},{self._stat()}", "OK"]
        if body == "+CEREG?":
            return [f"+CEREG: {settings.cereg_n},{self._stat()}", "OK"]
        return _NOT_MINE

    def _answer_messages(self, body: str) -> list[str] | None:
        """Sending, listing, reading and deleting short messages."""
        if not body.startswith(("+CMGS", "+CMGL", "+CMGR", "+CMGD")):
            return _NOT_MINE
        if not self._sim_ready():
            return self._error_lines(cms=310 if ModemFault.NO_SIM in self.faults else 311)
        if body.startswith("+CMGS="):
            value = body[6:]
            if not value.isdigit() or not 7 <= int(value) <= 164:
                return self._error_lines(cms=304)
            self._pdu = bytearray()
            self._pdu_length = int(value)
            self._write(b"\r\n> ")
            return None
        if body.startswith("+CMGL"):
            return self._list(body)
        if body.startswith("+CMGR="):
            index = body[6:]
            text = self._storage.get(int(index)) if index.isdigit() else None
            if text is None:
                return self._error_lines(cms=321)
            lines = [f"+CMGR: {text.stat},,{text.tpdu_length}", text.pdu, "OK"]
            text.stat = 1
            return lines
        if body.startswith("+CMGD="):
            values = body[6:].split(",")
            if not values[0].isdigit():
                return self._error_lines(cms=321)
            flag = int(values[1]) if len(values) > 1 and values[1].isdigit() else 0
            if flag == 4:
                self._storage.clear()
            else:
                self._storage.pop(int(values[0]), None)
            return ["OK"]
        return ["ERROR"]

    def _list(self, body: str) -> list[str]:
        value = body[6:] if body.startswith("+CMGL=") else "0"
        if not value.isdigit() or int(value) > 4:
            return self._error_lines(cms=304)
        wanted = int(value)
        lines = []
        noise, self._listing_noise = self._listing_noise, []
        for index in sorted(self._storage):
            text = self._storage[index]
            if wanted in (4, text.stat):
                lines += [f"+CMGL: {index},{text.stat},,{text.tpdu_length}", *noise, text.pdu]
                text.stat = 1 if text.stat == 0 else text.stat
        return [*lines, "OK"]

    def _submit(self, pdu: str) -> None:
        """The PDU after the prompt, ended by Ctrl-Z."""
        try:
            raw = bytes.fromhex(pdu)
            tpdu_length = len(raw) - 1 - raw[0]
        except (ValueError, IndexError):
            self._respond(self._error_lines(cms=304))
            return
        if tpdu_length != self._pdu_length:
            # A real modem counts the TPDU octets it was promised (TS 27.005 §3.5.1).
            self._respond(self._error_lines(cms=304))
            return
        try:
            decoded = decode_submit(pdu)
        except PduError:
            self._respond(self._error_lines(cms=304))
            return
        interjections, self._interjections = self._interjections, []
        for data in interjections:
            self._write(data)
        if ModemFault.SEND_ERROR in self.faults:
            answer = self._error_lines(cms=self.send_error_code)
        elif self._stat() not in (1, 5):
            answer = self._error_lines(cms=331)
        else:
            reference = self._next_mr
            self._next_mr = (self._next_mr + 1) % 256
            self.sent_parts.append(SentPart(
                pdu, tpdu_length, decoded.destination, decoded.text, decoded.encoding,
                decoded.concat, reference, time.monotonic(),
            ))
            answer = [f"+CMGS: {reference}", "OK"]
        if self.send_delay_s > 0:
            self._later(self.send_delay_s, lambda: self._respond_locked(answer))
        else:
            self._respond(answer)

    # -- helpers (called with the lock held) -----------------------------------------------

    def _stat(self) -> int:
        if ModemFault.NO_SIM in self.faults or ModemFault.PIN_LOCKED in self.faults:
            return 0
        if ModemFault.NOT_REGISTERED in self.faults:
            return self.unregistered_stat
        return self.registration

    def _sim_ready(self) -> bool:
        return not ({ModemFault.NO_SIM, ModemFault.PIN_LOCKED} & self.faults)

    def _report_registration(self) -> None:
        if self._settings.creg_n:
            self._emit(f"+CREG: {self._stat()}")
        if self._settings.cereg_n:
            self._emit(f"+CEREG: {self._stat()}")

    def _set_int(self, body: str, name: str, allowed: tuple[int, ...]) -> list[str]:
        value = body.split("=", 1)[1]
        if not value.isdigit() or int(value) not in allowed:
            return self._error_lines(cme=3)
        setattr(self._settings, name, int(value))
        return ["OK"]

    def _error_lines(self, cme: int | None = None, cms: int | None = None) -> list[str]:
        if cms is not None:
            return [f"+CMS ERROR: {cms}"]  # +CMS ERROR is given whatever AT+CMEE says
        if self._settings.cmee == 0:
            return ["ERROR"]
        return [f"+CME ERROR: {cme}"]

    def _final_error(self, cme: int) -> None:
        self._respond(self._error_lines(cme=cme))

    def _respond(self, lines: list[str]) -> None:
        self._write(b"".join(b"\r\n" + line.encode("ascii") + b"\r\n" for line in lines))

    def _respond_locked(self, lines: list[str]) -> None:
        with self._lock:
            if ModemFault.SILENT not in self.faults:
                self._respond(lines)

    def _emit(self, line: str) -> None:
        if ModemFault.SILENT not in self.faults:
            self._write(b"\r\n" + line.encode("ascii") + b"\r\n")

    def _restart(self) -> None:
        self._settings = _Settings()
        self._pdu = None
        self._line = bytearray()
        self._interjections = []
        self.boots += 1

    def _write(self, data: bytes) -> None:
        deadline = time.monotonic() + 1.0
        while data and time.monotonic() < deadline:
            try:
                written = os.write(self._fd, data)
            except BlockingIOError:
                time.sleep(0.001)
                continue
            except OSError:
                return
            data = data[written:]
