"""A modem's AT command port on the event loop: command lines in, result codes out.

Serves the SMS modem driver (drivers/gsm_modem.py) with the framing of ITU-T V.250 and
3GPP TS 27.007 §4-§5 / TS 27.005 §3: a command is a line ended by CR; the modem answers
with information lines and one final result code (``OK``, ``ERROR``, ``+CME ERROR: <err>``,
``+CMS ERROR: <err>``), or, for ``AT+CMGS``, with the ``> `` prompt that has no line end.
Between any two lines the modem may put an unsolicited result code (``+CMTI``, ``RING``,
``+CREG: <stat>``, ``RDY``, ``+CMT: ...`` with a PDU on the next line); those are told
apart from answers here and handed to ``on_unsolicited``, so a command's answer never
contains them and they are never lost inside one.

The port is opened non-blocking by pyserial (timeout 0) and its file descriptor is watched
by the event loop (``add_reader``), as drivers/lineport.py does for the instruments; a read
or write error closes it, fails the command under way with ``PortLost`` and calls
``on_lost``. One command at a time: the caller serialises them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import serial

from drivers.modem_codes import cme_reason, cms_reason

CTRL_Z = b"\x1a"
ESC = b"\x1b"
MAX_LINE_BYTES = 2048
_LINE_END = re.compile(rb"\r\n|\r|\n")
# Unsolicited result codes whose PDU (or text) follows on the next line (TS 27.005 §3.4.1).
_TWO_LINE_CODES = ("+CMT:", "+CDS:", "+CBM:")
_ONE_LINE_CODES = ("+CMTI:", "+CDSI:", "+CBMI:", "+CRING:", "+CLIP:", "+CUSD:")


class PortLost(Exception):
    """The port is closed (unplugged, never there); the message says why."""


class NoAnswer(Exception):
    """The modem did not answer in time."""


@dataclass(slots=True)
class Reply:
    """The answer to one command: its information lines and its final result code."""

    command: str
    lines: list[str]
    ok: bool
    error: str | None = None  # "modem_error" (plain ERROR), "cms_error" or "cme_error"
    code: int | None = None
    text: str = ""  # what the error means

    def first(self, prefix: str) -> str | None:
        """The value after ``prefix`` in the first line that starts with it."""
        for line in self.lines:
            if line.startswith(prefix):
                return line[len(prefix):].strip()
        return None

    def describe(self) -> str:
        if self.ok:
            return f"{self.command}: OK"
        code = f" {self.code}" if self.code is not None else ""
        return f"{self.command}: {self.error}{code} {self.text}".rstrip()


@dataclass(slots=True)
class _Exchange:
    command: str
    final: asyncio.Future[Reply]
    prompt: asyncio.Future[None] | None
    lines: list[str] = field(default_factory=list)


def is_registration_report(value: str) -> bool:
    """``+CREG: <stat>[,<lac>,<ci>...]`` reported against ``+CREG: <n>,<stat>[,...]``
    answered (TS 27.007 §7.2): the report has one field, or a quoted area code second."""
    values = [part.strip() for part in value.split(",")]
    return len(values) == 1 or values[1].startswith('"')


class AtPort:
    """One modem port: ``open``, ``command``, ``write``, ``final``, ``close``."""

    def __init__(
        self,
        port: str,
        baudrate: int,
        write_timeout_s: float,
        on_unsolicited: Callable[[str, str | None], None],
        on_lost: Callable[[str], None],
        counters: dict[str, int],
    ) -> None:
        self.port = port
        self.baudrate = baudrate
        self.write_timeout_s = write_timeout_s
        self.on_unsolicited = on_unsolicited  # (line, the next line for +CMT and the like)
        self.on_lost = on_lost
        self.counters = counters
        self.closed_reason = "port closed"
        self._serial: serial.Serial | None = None
        self._buffer = b""
        self._exchange: _Exchange | None = None
        self._two_line: str | None = None

    @property
    def is_open(self) -> bool:
        return self._serial is not None

    def open(self) -> str | None:
        """Open the port by path; None when it worked, else why not."""
        if self._serial is not None:
            return None
        if "://" not in self.port and not os.path.exists(self.port):
            return f"{self.port} not found"
        try:
            handle = serial.serial_for_url(
                self.port, baudrate=self.baudrate, timeout=0, write_timeout=0, exclusive=True
            )
        except Exception as exc:  # pyserial also raises termios.error, not an OSError
            return f"cannot open {self.port}: {exc}"
        self._serial = handle
        self.discard_input()
        asyncio.get_running_loop().add_reader(handle.fileno(), self._readable)
        return None

    def close(self, reason: str = "port closed") -> None:
        handle, self._serial = self._serial, None
        self.closed_reason = reason
        if handle is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(handle.fileno())
            with contextlib.suppress(Exception):
                handle.close()
        exchange, self._exchange = self._exchange, None
        if exchange is not None:
            for future in (exchange.prompt, exchange.final):
                if future is not None and not future.done():
                    future.set_exception(PortLost(reason))
                    future.exception()  # retrieved: no warning if nobody awaits it

    def discard_input(self) -> None:
        """Forget what arrived and is not a whole line yet (before a fresh dialogue)."""
        self._buffer = b""
        self._two_line = None

    async def write(self, data: bytes) -> None:
        deadline = time.monotonic() + self.write_timeout_s
        while data:
            handle = self._serial
            if handle is None:
                raise PortLost(self.closed_reason)
            try:
                written = handle.write(data) or 0
            except (serial.SerialException, OSError) as exc:
                self._lost(f"write failed: {exc}")
                raise PortLost(f"write failed: {exc}") from None
            data = data[written:]
            if data:
                if time.monotonic() >= deadline:
                    raise NoAnswer("modem does not take input (write timed out)")
                await asyncio.sleep(0.005)

    async def command(self, command: str, timeout: float, prompt: bool = False) -> Reply | None:
        """Send one command line and wait for its final result code; with ``prompt`` wait
        for the '> ' prompt instead (None), unless an error comes first (its Reply)."""
        if self._serial is None:
            raise PortLost(self.closed_reason)
        loop = asyncio.get_running_loop()
        exchange = _Exchange(
            command, loop.create_future(), loop.create_future() if prompt else None
        )
        self._exchange = exchange
        await self.write(command.encode("ascii") + b"\r")
        if exchange.prompt is None:
            return await self.final(timeout)
        done, _ = await asyncio.wait(
            {exchange.prompt, exchange.final}, timeout=timeout,
            return_when=asyncio.FIRST_COMPLETED,
        )
        if exchange.final in done:
            self._exchange = None
            return exchange.final.result()
        if exchange.prompt in done:
            exchange.prompt.result()  # raises PortLost if that is how it ended
            return None
        # No prompt: cancel the PDU input the modem may still be waiting for.
        with contextlib.suppress(PortLost, NoAnswer):
            await self.write(ESC)
        self._exchange = None
        raise NoAnswer(f"no answer to {command} within {timeout:g} s")

    async def final(self, timeout: float) -> Reply:
        """The final result code of the command under way (after the PDU was written)."""
        exchange = self._exchange
        if exchange is None:
            raise PortLost(self.closed_reason)
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for may swallow a cancellation.
            async with asyncio.timeout(timeout):
                return await asyncio.shield(exchange.final)
        except TimeoutError:
            raise NoAnswer(f"no answer to {exchange.command} within {timeout:g} s") from None
        finally:
            if self._exchange is exchange:
                self._exchange = None

    # -- the reading side ------------------------------------------------------------------

    def _count(self, what: str, n: int = 1) -> None:
        self.counters[what] = self.counters.get(what, 0) + n

    def _lost(self, reason: str) -> None:
        if self._serial is None:
            return
        self.close(reason)
        self.on_lost(reason)

    def _readable(self) -> None:
        handle = self._serial
        if handle is None:
            return
        try:
            data = handle.read(4096)
        except (serial.SerialException, OSError) as exc:
            self._lost(f"read failed: {exc}")
            return
        self._buffer += data
        *lines, self._buffer = _LINE_END.split(self._buffer)
        for raw in lines:
            line = raw.decode("ascii", errors="replace").strip()
            if line:
                self._on_line(line)
        exchange = self._exchange
        if (
            exchange is not None and exchange.prompt is not None
            and not exchange.prompt.done() and self._buffer.lstrip().startswith(b">")
        ):
            self._buffer = b""
            exchange.prompt.set_result(None)
        if len(self._buffer) > MAX_LINE_BYTES:
            self._count("overlong_line_bytes", len(self._buffer))
            self._buffer = b""

    def _on_line(self, line: str) -> None:
        if self._two_line is not None:
            header, self._two_line = self._two_line, None
            self.on_unsolicited(header, line)
            return
        exchange = self._exchange
        if exchange is not None and self._is_final(line, exchange):
            return
        if line.startswith(_TWO_LINE_CODES):
            self._two_line = line
            return
        if self._is_unsolicited(line, exchange):
            self.on_unsolicited(line, None)
            return
        if exchange is not None:
            exchange.lines.append(line)
        elif line.startswith("+CMGS:"):
            # The network's late acceptance of a part whose send had timed out: that text
            # went after all (its outcome said timeout, so a retry may duplicate it).
            self._count("late_send_confirmations")
        else:
            self._count("unsolicited_lines")

    def _is_final(self, line: str, exchange: _Exchange) -> bool:
        reply: Reply | None = None
        if line == "OK":
            reply = Reply(exchange.command, exchange.lines, True)
        elif line in ("ERROR", "COMMAND NOT SUPPORT"):  # the latter: some Huawei firmware
            reply = Reply(exchange.command, exchange.lines, False, "modem_error", None, line)
        elif line.startswith(("+CMS ERROR:", "+CME ERROR:")):
            sms = line.startswith("+CMS")
            value = line.split(":", 1)[1].strip()
            code = int(value) if value.isdigit() else None
            # Without a number (AT+CMEE=2) the modem says it in words.
            text = (cms_reason if sms else cme_reason)(code)[0] if code is not None else value
            error = "cms_error" if sms else "cme_error"
            reply = Reply(exchange.command, exchange.lines, False, error, code, text)
        if reply is None:
            return False
        if not exchange.final.done():
            exchange.final.set_result(reply)
        if exchange.prompt is not None and not exchange.prompt.done():
            exchange.prompt.cancel()
        return True

    @staticmethod
    def _is_unsolicited(line: str, exchange: _Exchange | None) -> bool:
        command = exchange.command if exchange is not None else ""
        if line.startswith(_ONE_LINE_CODES) or line in ("RING", "RDY"):
            return True
        if line.startswith(("+CREG:", "+CEREG:", "+CGREG:")):
            return is_registration_report(line.split(":", 1)[1])
        # +CPIN: that nobody asked for: the modem (re)started or the SIM changed.
        return line.startswith("+CPIN:") and command != "AT+CPIN?"
