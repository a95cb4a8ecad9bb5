"""Fault plans for ``edge simulate``: which simulated device misbehaves how, and when.

Models the failures a site's field side actually produces, so tests and the demo can show
the gateway handling them: a slave that stops answering, line noise (CRC errors, garbage
bytes), exception responses, a sensor stuck at one value or spiking, an adapter or
network link that disappears, a GNSS receiver that loses its RTK fix.

A plan is YAML (``--faults FILE``), times in seconds since the simulator started::

    faults:
      - {kind: silent,     device: piezo-1, at_s: 10, for_s: 20}  # never answers
      - {kind: exception,  device: level-1, at_s: 15, for_s: 5, code: 2}
      - {kind: crc_error,  device: piezo-2, at_s: 20, for_s: 10}  # RTU CRC / NMEA checksum
      - {kind: garbage,    device: piezo-2, at_s: 35, for_s: 5}   # random bytes instead
      - {kind: stuck,      point: level-1/water_level, at_s: 40, for_s: 30}
      - {kind: spike,      point: level-1/water_level, at_s: 50, for_s: 2, offset: 10}
      - {kind: disconnect, bus: rs485-1, at_s: 60, for_s: 10}     # unplug / server down
      - {kind: rtk_float,  device: gnss-1, at_s: 70, for_s: 20}

or ``--fault KIND:TARGET:AT_S[:FOR_S[:VALUE]]`` on the command line (VALUE is ``code``
for exception, ``offset`` for spike), e.g. ``--fault silent:piezo-1:10:20``. Without
``for_s`` a fault lasts until the simulator stops.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pymodbus.constants import ExcCodes

from edge.config import GatewaySettings
from edge.yamlsource import ConfigSourceError, format_key_path, load_yaml_file
from vocab.configbase import StrictModel

Ident = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
PointRef = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}/[A-Za-z0-9_-]{1,64}$")]

FaultKind = Literal[
    "silent", "exception", "crc_error", "garbage", "stuck", "spike", "disconnect", "rtk_float"
]

# Which bus types can simulate each kind of fault.
APPLIES_TO: dict[str, tuple[str, ...]] = {
    "silent": ("modbus_tcp", "modbus_rtu", "nmea_gnss"),
    "exception": ("modbus_tcp", "modbus_rtu"),
    "crc_error": ("modbus_rtu", "nmea_gnss"),
    "garbage": ("modbus_rtu", "nmea_gnss"),
    "stuck": ("modbus_tcp", "modbus_rtu"),
    "spike": ("modbus_tcp", "modbus_rtu"),
    "disconnect": ("modbus_tcp", "modbus_rtu", "nmea_gnss"),
    "rtk_float": ("nmea_gnss",),
}
_TARGET = {"stuck": "point", "spike": "point", "disconnect": "bus"}


class Fault(StrictModel):
    kind: FaultKind
    device: Ident | None = None
    point: PointRef | None = None
    bus: Ident | None = None
    at_s: float = Field(ge=0)
    for_s: float | None = Field(default=None, gt=0)
    # exception: the Modbus exception code (4 = server device failure).
    code: int = Field(default=4, ge=1, le=255)
    # spike: added to the engineering value while the fault lasts.
    offset: float = 10.0

    @field_validator("code")
    @classmethod
    def _modbus_exception_code(cls, value: int) -> int:
        if value not in {c.value for c in ExcCodes}:
            known = ", ".join(str(c.value) for c in ExcCodes)
            raise ValueError(f"{value} is not a Modbus exception code ({known})")
        return value

    @model_validator(mode="after")
    def _one_target(self) -> Fault:
        wanted = _TARGET.get(self.kind, "device")
        given = [k for k in ("device", "point", "bus") if getattr(self, k) is not None]
        if given != [wanted]:
            raise ValueError(
                f"a {self.kind} fault names exactly one {wanted!r} "
                f"(got {', '.join(given) or 'none'})"
            )
        return self

    @property
    def target(self) -> str:
        return str(self.device or self.point or self.bus)

    def active(self, t: float) -> bool:
        return self.at_s <= t and (self.for_s is None or t < self.at_s + self.for_s)


class FaultPlan(StrictModel):
    faults: list[Fault] = Field(default_factory=list)

    def active(self, kind: str, target: str, t: float) -> Fault | None:
        for fault in self.faults:
            if fault.kind == kind and fault.target == target and fault.active(t):
                return fault
        return None

    def merged(self, other: FaultPlan) -> FaultPlan:
        return FaultPlan(faults=[*self.faults, *other.faults])


class FaultPlanError(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def load_fault_plan(path: Path) -> FaultPlan:
    try:
        doc = load_yaml_file(path)
    except ConfigSourceError as exc:
        raise FaultPlanError([str(p) for p in exc.problems]) from None
    try:
        return FaultPlan.model_validate(doc.data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            loc = tuple(error["loc"])
            where = doc.locate(loc)
            prefix = f"{where}: " if where else f"{path.name}: "
            message = str((error.get("ctx") or {}).get("error", error["msg"]))
            problems.append(f"{prefix}{format_key_path(loc)}: {message}")
        raise FaultPlanError(problems) from None


def parse_fault_flag(text: str) -> Fault:
    """``KIND:TARGET:AT_S[:FOR_S[:VALUE]]`` from the command line."""
    parts = text.split(":")
    if not 3 <= len(parts) <= 5:
        raise FaultPlanError([f"--fault {text!r}: expected KIND:TARGET:AT_S[:FOR_S[:VALUE]]"])
    kind, target, at_s, *rest = parts
    data: dict[str, object] = {"kind": kind, _TARGET.get(kind, "device"): target, "at_s": at_s}
    if rest and rest[0]:
        data["for_s"] = rest[0]
    if len(rest) == 2:
        data["code" if kind == "exception" else "offset"] = rest[1]
    try:
        return Fault.model_validate(data)
    except ValidationError as exc:
        messages = "; ".join(
            str((e.get("ctx") or {}).get("error", e["msg"])) for e in exc.errors(include_url=False)
        )
        raise FaultPlanError([f"--fault {text!r}: {messages}"]) from None


def check_plan(plan: FaultPlan, settings: GatewaySettings) -> None:
    """Every fault must name something the simulator serves, with a fitting bus type."""
    buses = {b.id: b.type for b in settings.buses}
    devices = {d.id: d.bus for d in settings.devices}
    points = {f"{d.id}/{p.id}": d.bus for d, p in settings.iter_points()}
    problems = []
    for index, fault in enumerate(plan.faults):
        where = f"faults[{index}] ({fault.kind} {fault.target})"
        if fault.bus is not None:
            bus_id = fault.bus if fault.bus in buses else None
            what = "bus"
        elif fault.point is not None:
            bus_id = points.get(fault.point)
            what = "point"
        else:
            bus_id = devices.get(fault.device or "")
            what = "device"
        if bus_id is None:
            problems.append(f"{where}: no {what} {fault.target!r} in the configuration")
            continue
        bus_type = buses.get(bus_id, "")
        if bus_type not in APPLIES_TO[fault.kind]:
            problems.append(
                f"{where}: {fault.kind} cannot be simulated on a {bus_type} bus "
                f"(only {', '.join(APPLIES_TO[fault.kind])})"
            )
    if problems:
        raise FaultPlanError(problems)


def build_plan(files: Iterable[Path], flags: Iterable[str], settings: GatewaySettings) -> FaultPlan:
    plan = FaultPlan()
    for path in files:
        plan = plan.merged(load_fault_plan(path))
    plan = plan.merged(FaultPlan(faults=[parse_fault_flag(f) for f in flags]))
    check_plan(plan, settings)
    return plan
