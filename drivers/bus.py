"""What a bus type is to the rest of the gateway: a config model, its checks, its driver.

A site's buses (an RS-485 line, a Modbus TCP endpoint, a serial port with a text
instrument or a GNSS receiver) are each served by one ``BusTask`` (drivers/bustask.py),
which owns everything all buses share: the device schedule, health figures, the
heartbeat the watchdog reads, and the poll tail (device online/offline, hand-over to the
daemon). What differs between bus types is only how a device is polled, and that is a
``FieldDriver``: open the link, poll one device, optionally listen to free-running
instruments, close.

Each bus type is one module declaring a ``BusType``: its config model (a ``StrictModel``
with ``id`` and ``type: Literal[...]``), the checks its devices must pass, and a factory
for its driver. drivers/registry.py lists them; the site configuration's bus union and its
cross-checks are built from that table, so adding a bus type is one module and one line.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, get_args

from pydantic import Field

from drivers.devices import DeviceConfig
from vocab.checking import PathKey, Report
from vocab.configbase import StrictModel
from vocab.model import PollResult
from vocab.waits import Wake

PollSink = Callable[[PollResult], Awaitable[None]]
"""Where a bus task hands each device's poll result: the daemon's pipeline queue."""


@dataclass(slots=True)  # one per device: no __dict__ for 200 small slaves
class DeviceHealth:
    """What the health topic reports about one device."""

    online: bool = True
    consecutive_failures: int = 0
    last_good_ms: int | None = None
    polls: int = 0
    errors: int = 0
    requests_last_cycle: int = 0
    last_error: str | None = None
    # Failed polls by kind (the reason up to its first ':'), e.g. timeout, crc_error.
    error_kinds: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class BusHealth:
    connected: bool = False
    cycles: int = 0
    devices: dict[str, DeviceHealth] = field(default_factory=dict)
    last_cycle_monotonic: float = field(default_factory=time.monotonic)
    reconnects: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    # Line-level events that belong to no single poll: bad NMEA checksums, lines that
    # match no pattern, bytes dropped from an overlong line.
    counters: dict[str, int] = field(default_factory=dict)

    def count(self, what: str, n: int = 1) -> None:
        self.counters[what] = self.counters.get(what, 0) + n


@dataclass(frozen=True, slots=True)
class CoilWrite:
    """What became of switching coils of a relay module (a siren, a beacon): the write
    (FC05 for one coil, FC15 for several) and the read-back (FC01) that checks it."""

    bus: str
    unit: int
    address: int
    values: tuple[bool, ...]
    ok: bool
    # What FC01 answered after the write; None when it was not read (the write failed).
    read_back: tuple[bool, ...] | None
    # Why not ok: timeout, exception_response: code 2, read_back_differs: ..., a link error.
    error: str | None
    elapsed_s: float


class CoilWriter(Protocol):
    """A driver that can switch coils between polls (Modbus); others cannot."""

    async def write_coils(self, unit: int, address: int,
                          values: Sequence[bool]) -> CoilWrite: ...


class FieldDriver(Protocol):
    """How one bus type talks to its devices; everything else is the bus task's."""

    @property
    def listening(self) -> Sequence[str]:
        """Ids of free-running devices: heard while the task waits, never asked."""
        ...

    @property
    def reopen_at(self) -> float | None:
        """``time.monotonic()`` at which a closed link wants a re-open attempt, or None.

        A driver whose link is opened inside ``poll`` returns None.
        """
        ...

    async def reopen(self) -> None:
        """Try to re-open the link now; failures are recorded, never raised."""
        ...

    async def poll(self, device: DeviceConfig) -> PollResult:
        """Poll one device. Bad data becomes bad readings; this never raises on it."""
        ...

    async def listen(self, until: float, wake: Wake) -> None:
        """Hear free-running devices until ``until`` (monotonic) or ``wake`` is set.

        Called only when ``listening`` is not empty.
        """
        ...

    def close(self) -> None: ...


class SerialPortSettings(StrictModel):
    """The serial line settings every serial bus type shares."""

    port: str
    baudrate: int = Field(default=9600, ge=300, le=921600)
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8


DriverFactory = Callable[[Any, list[DeviceConfig], BusHealth], FieldDriver]
DeviceCheck = Callable[[Any, DeviceConfig, PathKey, Sequence[DeviceConfig], Report], None]
"""``check(bus, device, path, earlier_devices_of_the_bus, report)``."""


@dataclass(frozen=True)
class BusType:
    """One entry of the bus-type table (drivers/registry.py)."""

    config: type[StrictModel]
    check_device: DeviceCheck
    make_driver: DriverFactory
    # DeviceConfig keys that only this bus type uses, and how to say so to a user who
    # put one on a device of another bus type ('line': 'a serial_line bus').
    device_keys: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        # By contract the model's ``type`` is a Literal of the one name.
        return str(get_args(self.config.model_fields["type"].annotation)[0])


def check_register_points(bus: Any, device: DeviceConfig, here: PathKey,
                          report: Report) -> None:
    """Modbus points are located by their register, never by a field name."""
    for index, point in enumerate(device.points):
        where: PathKey = (*here, "points", index)
        if point.register is None:
            report(where, f"point {device.id}/{point.id} on {bus.type} bus {bus.id!r} needs "
                          "'register' (table, address, type)")
        if point.field is not None:
            report((*where, "field"), f"'field' is for serial_line and nmea_gnss points; on "
                                      f"{bus.type} use 'register'")


def check_field_points(bus: Any, device: DeviceConfig, here: PathKey, known: Sequence[str],
                       report: Report) -> list[tuple[PathKey, str]]:
    """Points of text and GNSS buses name their value with 'field'.

    Returns (path, field) of the points that named one, for the bus type to judge.
    """
    named: list[tuple[PathKey, str]] = []
    for index, point in enumerate(device.points):
        where: PathKey = (*here, "points", index)
        if point.register is not None:
            report((*where, "register"), f"'register' is for Modbus points; on {bus.type} "
                                         "name the value with 'field'")
        if point.field is None:
            report(where, f"point {device.id}/{point.id} on {bus.type} bus {bus.id!r} needs "
                          f"'field' (one of: {', '.join(known) or 'none'})")
        else:
            named.append(((*where, "field"), point.field))
    return named


def check_alone_on_port(bus: Any, device: DeviceConfig, here: PathKey,
                        earlier: Sequence[DeviceConfig], exclusive: Callable[[DeviceConfig], bool],
                        report: Report) -> None:
    """A free-running instrument or a GNSS receiver owns its port: nothing would tell
    whose line is whose."""
    if not earlier:
        return
    first = earlier[0]
    if exclusive(device) or exclusive(first):
        report((*here, "bus"), f"device {device.id!r} shares {bus.type} bus {bus.id!r} with "
                               f"{first.id!r}; a free-running instrument or GNSS receiver "
                               "must be alone on its port")
