"""The bus-type table: which module serves each ``type`` of a site's ``buses``.

Each bus type is one module declaring a ``BusType`` (drivers/bus.py): its config model,
its device checks and its driver factory. The site configuration's bus union and the
checks of devices against their buses are built from this table, and the daemon builds
every bus task through ``make_poller``; adding a bus type is one module and one line here.

The modules are light on purpose: pymodbus and pyserial are imported when the first bus
that needs them is built (about 13 MiB and 50 ms for pymodbus), so loading a site's
configuration costs neither, and a site without Modbus buses never loads pymodbus. The
table names modules rather than importing them, as rules/registry.py does: the daemon
imports the module of each bus type its site uses, when it unpickles that type's config.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

from drivers.bus import BusHealth, BusType, DeviceHealth, PollSink
from drivers.bustask import BusTask
from drivers.devices import DeviceConfig
from vocab.checking import PathKey, Report

# type -> (module, the name of its BusType there)
BUS_MODULES: dict[str, tuple[str, str]] = {
    "modbus_tcp": ("drivers.modbus", "TCP"),
    "modbus_rtu": ("drivers.modbus", "RTU"),
    "serial_line": ("drivers.serial_line", "BUS_TYPE"),
    "nmea_gnss": ("drivers.gnss", "BUS_TYPE"),
}


def bus_type(name: str) -> BusType:
    """The bus type called ``name``; KeyError for a name not in the table."""
    module, attribute = BUS_MODULES[name]
    found: BusType = getattr(importlib.import_module(module), attribute)
    return found


def bus_models() -> tuple[type, ...]:
    """The config model of every bus type, for the site configuration's union."""
    return tuple(bus_type(name).config for name in BUS_MODULES)


def make_poller(bus: Any, devices: list[DeviceConfig], sink: PollSink) -> BusTask:
    """The task serving one bus and its devices."""
    if bus.type not in BUS_MODULES:
        raise ValueError(f"no driver for bus type {bus.type!r}")
    health = BusHealth(devices={d.id: DeviceHealth() for d in devices})
    driver = bus_type(bus.type).make_driver(bus, devices, health)
    return BusTask(bus.id, devices, driver, health, sink)


def check_devices(buses: Sequence[Any], devices: Sequence[DeviceConfig],
                  report: Report) -> None:
    """Every device against its bus: keys of other bus types, and its bus type's checks."""
    by_id = {b.id: b for b in buses}
    owners = {key: (name, phrase) for name in BUS_MODULES
              for key, phrase in bus_type(name).device_keys.items()}
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
        bus_type(bus.type).check_device(bus, device, here, earlier, report)
        earlier.append(device)
