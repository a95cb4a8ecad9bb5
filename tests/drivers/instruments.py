"""Serial instruments for driver tests, at the device end of a SerialWire.

They open the wire's device-side pty like a real instrument's UART would be wired, and
read and write it from the test's event loop.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Callable

from simulator.serialwire import SerialWire

Answer = Callable[[str], str | None]


class TextInstrument:
    """Answers commands (``answer(command) -> reply or None``) and prints on request."""

    def __init__(
        self, wire: SerialWire, answer: Answer | None = None, delay_s: float = 0.0
    ) -> None:
        self.wire = wire
        self.answer = answer
        self.delay_s = delay_s
        self.commands: list[tuple[float, str]] = []
        self.replies: list[tuple[float, str]] = []
        self._fd = -1
        self._buffer = b""

    def __enter__(self) -> TextInstrument:
        self._fd = os.open(self.wire.device_path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        asyncio.get_running_loop().add_reader(self._fd, self._readable)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.get_running_loop().remove_reader(self._fd)
        os.close(self._fd)

    def say(self, text: str | bytes) -> None:
        data = text.encode("latin-1") if isinstance(text, str) else text
        os.write(self._fd, data)

    def _readable(self) -> None:
        try:
            self._buffer += os.read(self._fd, 4096)
        except BlockingIOError:
            return
        *lines, self._buffer = re.split(rb"\r\n|\r|\n", self._buffer)
        for raw in lines:
            if not raw:
                continue
            command = raw.decode("ascii", errors="replace")
            self.commands.append((time.monotonic(), command))
            reply = self.answer(command) if self.answer else None
            if reply is not None:
                asyncio.get_running_loop().call_later(self.delay_s, self._reply, reply)

    def _reply(self, reply: str) -> None:
        self.replies.append((time.monotonic(), reply))
        self.say(reply)


async def print_lines(
    instrument: TextInstrument, lines: Callable[[int], str | None], every_s: float, count: int
) -> None:
    """A free-running instrument: ``lines(i)`` printed every ``every_s`` (None: skip)."""
    for i in range(count):
        text = lines(i)
        if text is not None:
            instrument.say(text)
        await asyncio.sleep(every_s)
