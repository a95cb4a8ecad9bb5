"""The bus-type table: which module serves each ``type`` of a site's ``buses``.

Each bus type is one module declaring a ``BusType`` (drivers/bus.py): its config model,
its device checks and its driver factory. The site configuration's bus union and the
checks of devices against their buses are built from this table, and the daemon builds
every bus task through ``make_poller``; adding a bus type is one module and one line here.

The modules are light on purpose: pymodbus and pyserial are imported when the first bus
that needs them is built (about 13 MiB and 50 ms for pymodbus), so loading a site's
configuration costs neither, and a site without Modbus buses never loads pymodbus.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from drivers import gnss, modbus, serial_line
from drivers.bus import BusHealth, BusType, DeviceHealth, PollSink
from drivers.bustask import BusTask
from drivers.devices import DeviceConfig
from vocab.checking import PathKey, Report

BUS_TYPES: dict[str, BusType] = {
    bus_type.name: bus_type
    for bus_type in (modbus.TCP, modbus.RTU, serial_line.BUS_TYPE, gnss.BUS_TYPE)
}


def bus_models() -> tuple[type, ...]:
    """The config model of every bus type, for the site configuration's union."""
    return tuple(bus_type.config for bus_type in BUS_TYPES.values())


def make_poller(bus: Any, devices: list[DeviceConfig], sink: PollSink) -> BusTask:
    """The task serving one bus and its devices."""
    bus_type = BUS_TYPES.get(bus.type)
    if bus_type is None:
        raise ValueError(f"no driver for bus type {bus.type!r}")
    health = BusHealth(devices={d.id: DeviceHealth() for d in devices})
    return BusTask(bus.id, devices, bus_type.make_driver(bus, devices, health), health, sink)


def check_devices(buses: Sequence[Any], devices: Sequence[DeviceConfig],
                  report: Report) -> None:
    """Every device against its bus: keys of other bus types, and its bus type's checks."""
    by_id = {b.id: b for b in buses}
    owners = {key: (name, phrase) for name, bus_type in BUS_TYPES.items()
              for key, phrase in bus_type.device_keys.items()}
    seen: dict[str, list[DeviceConfig]] = {}
    for index, device in enumerate(devices):
        here: PathKey = ("devices", index)
        bus = by_id.get(device.bus)
        if bus is None:
            continue  # the site configuration reports a bus that does not exist
        for key, (owner, phrase) in owners.items():
            if owner != bus.type and getattr(device, key) is not None:
                report((*here, key), f"'{key}' is for devices on {phrase}; bus {bus.id!r} is "
                                     f"{bus.type}")
        earlier = seen.setdefault(bus.id, [])
        BUS_TYPES[bus.type].check_device(bus, device, here, earlier, report)
        earlier.append(device)
