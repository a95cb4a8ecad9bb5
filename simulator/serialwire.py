"""A simulated serial cable between the gateway and field devices, over pseudo-terminals.

Models the wiring of a site's serial bus: the gateway's USB-RS485 (or RS-232) adapter at a
path such as ``/dev/serial/by-id/usb-FTDI_...`` and, at the other end, the field devices
(Modbus RTU slaves, a GNSS receiver, a text instrument). Two pseudo-terminal pairs are
joined by a relay thread: the gateway opens ``link_path`` (a symlink, as by-id names are)
and a device program opens ``device_path``; nothing in either program knows it is not a
real port.

A pty moves bytes instantly, so with ``baudrate`` set the relay paces them as the line
would: a chunk of n bytes occupies the (half-duplex) line for n × 11 bits / baud, devices
start answering no sooner than ``turnaround_s`` after the request's last byte (a real
slave's 3.5-character silence), and every frame is recorded with the times its first and
last bytes were on the line. That is what makes wire time measurable on a pty.

``unplug()`` behaves like pulling the USB adapter: the link disappears and the open port
fails with an I/O error; ``plug()`` brings a new adapter under the same name. The relay
runs in its own thread so its pacing does not depend on the gateway's event loop.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import queue
import select
import threading
import time
import tty
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Direction = Literal["to_device", "to_gateway"]
CHAR_BITS = 11


@dataclass
class WireFrame:
    """Bytes that crossed the line in one direction without a pause of 1.5 characters."""

    direction: Direction
    data: bytes
    start: float  # time.monotonic() of the first byte on the line
    end: float  # ... and of the end of the last byte


def _raw_pty() -> tuple[int, int, str]:
    master, slave = os.openpty()
    tty.setraw(slave)
    os.set_blocking(master, False)
    return master, slave, os.ttyname(slave)


class SerialWire:
    """A null-modem cable with a plug at ``link_path``; see the module docstring."""

    def __init__(
        self,
        link_path: str | Path,
        baudrate: int | None = None,
        turnaround_s: float | None = None,
        keep_frames: int = 100_000,
    ) -> None:
        self.link_path = Path(link_path)
        self.baudrate = baudrate
        self.char_s = CHAR_BITS / baudrate if baudrate else 0.0
        default_turnaround = (
            (0.00175 if baudrate > 19200 else 3.5 * self.char_s) if baudrate else 0.0
        )
        self.turnaround_s = default_turnaround if turnaround_s is None else turnaround_s
        # The newest frames (a long-running simulator keeps few: memory stays flat).
        self.frames: deque[WireFrame] = deque(maxlen=keep_frames)
        self.collisions = 0
        self.dropped_bytes = 0
        self.device_path = ""
        self._device: tuple[int, int] | None = None
        self._gateway: tuple[int, int] | None = None
        self._line_free = 0.0
        self._schedule: list[tuple[float, int, Direction, bytes]] = []
        self._order = itertools.count()
        self._commands: queue.Queue[tuple[Callable[[], None], threading.Event]] = queue.Queue()
        self._wake_r, self._wake_w = os.pipe()
        self._stopping = False
        self._thread: threading.Thread | None = None

    # -- lifecycle (any thread) -------------------------------------------------------------

    def open(self) -> SerialWire:
        master, slave, path = _raw_pty()
        self._device = (master, slave)
        self.device_path = path
        self._thread = threading.Thread(
            target=self._run, name=f"wire:{self.link_path.name}", daemon=True
        )
        self._thread.start()
        self.plug()
        return self

    def close(self) -> None:
        if self._thread is None:
            return
        self._call(self._unplug)
        self._stopping = True
        os.write(self._wake_w, b"x")
        self._thread.join(5)
        self._thread = None
        if self._device is not None:
            for fd in self._device:
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._device = None
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> SerialWire:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def plug(self) -> None:
        """Connect a (new) adapter: a fresh pty appears at ``link_path``."""
        self._call(self._plug)

    def unplug(self) -> None:
        """Pull the adapter: the link vanishes and the gateway's open port fails."""
        self._call(self._unplug)

    @property
    def plugged(self) -> bool:
        return self._gateway is not None

    def inject(self, data: bytes, direction: Direction = "to_gateway") -> None:
        """Put bytes on the line as if one side sent them (noise, a babbling device)."""
        self._call(lambda: self._accept(data, direction))

    def frames_to(self, direction: Direction) -> list[WireFrame]:
        return [f for f in list(self.frames) if f.direction == direction]

    def _call(self, action: Callable[[], None]) -> None:
        if self._thread is None or threading.current_thread() is self._thread:
            action()
            return
        done = threading.Event()
        self._commands.put((action, done))
        os.write(self._wake_w, b"x")
        if not done.wait(5):
            raise TimeoutError("serial wire relay did not respond")

    # -- the relay thread -----------------------------------------------------------------

    def _plug(self) -> None:
        if self._gateway is not None:
            return
        master, slave, path = _raw_pty()
        self._gateway = (master, slave)
        self.link_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.link_path.with_name(self.link_path.name + ".new")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(path)
        tmp.replace(self.link_path)

    def _unplug(self) -> None:
        if self._gateway is None:
            return
        if self.link_path.is_symlink():
            self.link_path.unlink()
        for fd in self._gateway:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._gateway = None
        self._schedule = [s for s in self._schedule if s[2] != "to_gateway"]
        heapq.heapify(self._schedule)

    def _run(self) -> None:
        while not self._stopping:
            while not self._commands.empty():
                action, done = self._commands.get()
                try:
                    action()
                finally:
                    done.set()
            now = time.monotonic()
            while self._schedule and self._schedule[0][0] <= now:
                _, _, direction, data = heapq.heappop(self._schedule)
                self._deliver(direction, data)
            timeout = 0.05
            if self._schedule:
                timeout = max(0.0, min(timeout, self._schedule[0][0] - time.monotonic()))
            sources = [self._wake_r]
            if self._device is not None:
                sources.append(self._device[0])
            if self._gateway is not None:
                sources.append(self._gateway[0])
            try:
                ready, _, _ = select.select(sources, [], [], timeout)
            except (OSError, ValueError):
                continue
            for fd in ready:
                if fd == self._wake_r:
                    os.read(self._wake_r, 1024)
                    continue
                try:
                    data = os.read(fd, 4096)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if not data:
                    continue
                from_device = self._device is not None and fd == self._device[0]
                self._accept(data, "to_gateway" if from_device else "to_device")

    def _accept(self, data: bytes, direction: Direction) -> None:
        now = time.monotonic()
        last = self.frames[-1] if self.frames else None
        if not self.baudrate:
            self._record(direction, data, now, now, last)
            self._deliver(direction, data)
            return
        start = max(now, self._line_free)
        if last is not None and last.direction != direction:
            if last.end > now:
                # Both ends driving a half-duplex line at once: on a real bus both frames
                # are garbled. Counted; the bytes still pass so the test can see who did it.
                self.collisions += 1
            elif direction == "to_gateway":
                start = max(start, last.end + self.turnaround_s)
        end = start + len(data) * self.char_s
        self._line_free = end
        self._record(direction, data, start, end, last)
        heapq.heappush(self._schedule, (end, next(self._order), direction, data))

    def _record(
        self, direction: Direction, data: bytes, start: float, end: float, last: WireFrame | None
    ) -> None:
        contiguous = (
            last is not None
            and last.direction == direction
            and start <= last.end + 1.5 * self.char_s + 0.0005
        )
        if contiguous and last is not None:
            last.data += data
            last.end = end
        else:
            self.frames.append(WireFrame(direction, data, start, end))

    def _deliver(self, direction: Direction, data: bytes) -> None:
        target = self._device if direction == "to_device" else self._gateway
        if target is None:
            self.dropped_bytes += len(data)
            return
        try:
            written = os.write(target[0], data)
        except OSError:
            written = 0
        self.dropped_bytes += len(data) - written
