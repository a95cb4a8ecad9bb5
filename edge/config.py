"""The gateway's configuration: typed models, validation and located error messages.

Everything the daemon does is decided by these models, validated before anything starts.
The top-level shape (site, gateway, mqtt, store, buses, devices, rules) is a contract with
the people who write site files and with the platform; keys may be added, never renamed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
import zoneinfo
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from drivers.calibration import Calibration
from drivers.nmea import GnssBaseline
from drivers.registers import REGISTER_TYPES, RegisterType, register_count
from drivers.tipping_bucket import TippingBucketCounter
from edge.yamlsource import (
    ConfigProblem,
    ConfigSourceError,
    LocatedDocument,
    PathKey,
    format_key_path,
    load_config_source,
)
from rules.accumulation import AccumulationConfig
from rules.checks import check_rules
from rules.derived import DerivedPointConfig
from rules.hst import HstConfig
from rules.lag_correlation import LagCorrelationConfig
from rules.quality import QualityConfig
from rules.rate import RateConfig
from rules.threshold import ThresholdConfig
from vocab.configbase import StrictModel
from vocab.ids import Ident

Quantity = Literal[
    "water_level",
    "rainfall_counter",
    "rainfall",
    "seepage_pressure",
    "piezometric_level",
    "seepage_flow",
    "weir_head",
    "displacement",
    "settlement",
    "temperature",
    "vw_frequency",
    "battery_voltage",
    "status",
    "other",
]


class SiteConfig(StrictModel):
    id: Ident
    name: str = ""
    timezone: str = "Asia/Shanghai"
    language: Literal["zh", "en"] = "en"
    # Characteristic levels (m): dead, flood_limit, normal_pool, design_flood,
    # check_flood, crest. Rules may name them instead of repeating numbers.
    levels: dict[Ident, float] = Field(default_factory=dict)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r} (use an IANA name such as "
                             "Asia/Shanghai)") from exc
        return value


class GatewayConfig(StrictModel):
    id: Ident


class TlsConfig(StrictModel):
    """TLS to the broker: the platform's CA, and a client certificate where required."""

    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None
    # Only for brokers reached by IP whose certificate lacks that IP: weakens TLS.
    check_hostname: bool = True

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (the client certificate "
                             "and its private key)")
        return self


class MqttConfig(StrictModel):
    host: str
    port: int = Field(default=1883, ge=1, le=65535)
    topic_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")] = \
        "reservoir"
    client_id: str | None = None
    username: str | None = None
    # Secrets never sit in the YAML: name an environment variable or a file.
    password_env: str | None = None
    password_file: Path | None = None
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    max_inflight: int = Field(default=20, ge=1, le=1000)
    # Reconnect backoff: doubles from min to max, each wait drawn in [wait/2, wait].
    reconnect_min_s: float = Field(default=1.0, gt=0, le=3600)
    reconnect_max_s: float = Field(default=10.0, gt=0, le=3600)
    # 3.1.1 works with every broker a district may run; only Mosquitto speaks 5 among
    # the ones measured (lessons.md). With 5, command replies also honour the request's
    # response topic and correlation data.
    protocol: Literal["3.1.1", "5"] = "3.1.1"
    # MQTT 5 session expiry: how long the broker keeps our session while we are away.
    session_expiry_s: int = Field(default=7 * 24 * 3600, ge=0)
    tls: TlsConfig | None = None

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol_as_text(cls, value: object) -> object:
        # YAML reads an unquoted 5 as a number.
        return str(value) if isinstance(value, int) else value

    @model_validator(mode="after")
    def _consistent(self) -> MqttConfig:
        if self.password_env and self.password_file:
            raise ValueError("give password_env or password_file, not both")
        if (self.password_env or self.password_file) and not self.username:
            raise ValueError("a password needs a username (password_env/password_file are "
                             "only sent with one)")
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError(f"reconnect_min_s ({self.reconnect_min_s}) is above "
                             f"reconnect_max_s ({self.reconnect_max_s})")
        return self

    def password(self) -> str | None:
        """Read the password from its environment variable or file (never logged)."""
        if self.password_env:
            value = os.environ.get(self.password_env)
            if value is None:
                raise ValueError(f"environment variable {self.password_env} is not set")
            return value
        if self.password_file:
            return self.password_file.read_text(encoding="utf-8").strip()
        return None


class StoreConfig(StrictModel):
    path: Path
    # FULL: a committed poll cycle survives a power cut (WAL is fsynced on commit).
    # NORMAL is faster on slow SD cards but may lose the last cycles on power loss.
    synchronous: Literal["full", "normal"] = "full"
    # How long readings are kept; rules may not look further back than this.
    retention_days: int = Field(default=400, ge=1, le=36500)
    # The most the store may use. Past it, delivered history goes first, then unsent
    # telemetry is thinned 1 of N (alarms never); see docs/mqtt.md "Disk quota".
    quota_mb: float = Field(default=1024.0, ge=0.05, le=1_000_000)
    maintenance_interval_s: float = Field(default=30.0, ge=1, le=3600)


class ModbusTcpBus(StrictModel):
    id: Ident
    type: Literal["modbus_tcp"]
    host: str
    port: int = Field(default=502, ge=1, le=65535)
    timeout_s: float = Field(default=1.0, gt=0, le=60)
    retries: int = Field(default=0, ge=0, le=5)


class SerialPortSettings(StrictModel):
    """The serial line settings every serial bus type shares."""

    port: str
    baudrate: int = Field(default=9600, ge=300, le=921600)
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8


class ModbusRtuBus(SerialPortSettings):
    id: Ident
    type: Literal["modbus_rtu"]
    timeout_s: float = Field(default=1.0, gt=0, le=60)
    retries: int = Field(default=0, ge=0, le=5)
    inter_request_delay_s: float = Field(default=0.0, ge=0, le=10)


class SerialLineBus(SerialPortSettings):
    """A serial port with a text instrument (RS-232/RS-485 ASCII): see drivers/serial_line."""

    id: Ident
    type: Literal["serial_line"]
    # How long a request/response instrument may take to answer its command.
    timeout_s: float = Field(default=1.0, gt=0, le=60)
    encoding: Literal["ascii", "latin-1", "utf-8"] = "ascii"


class NmeaGnssBus(SerialPortSettings):
    """A serial port with a GNSS receiver streaming NMEA 0183: see drivers/gnss."""

    id: Ident
    type: Literal["nmea_gnss"]


SerialBus = ModbusRtuBus | SerialLineBus | NmeaGnssBus

BusConfig = Annotated[ModbusTcpBus | ModbusRtuBus | SerialLineBus | NmeaGnssBus,
                      Field(discriminator="type")]

# The values a GNSS point may name with 'field': the components of drivers.nmea's
# GnssDisplacement (its 'flags' become the reading's quality instead).
GNSS_FIELDS: tuple[str, ...] = ("east_mm", "north_mm", "up_mm", "downstream_mm", "axis_mm",
                                "settlement_mm", "fix_quality", "satellites", "hdop")

# pydantic warns that a field named "register" shadows ABCMeta.register; the key name is
# part of the config contract and the classmethod is never used on models.
warnings.filterwarnings("ignore", message='Field name "register"', category=UserWarning)

RegisterTable = Literal["coil", "discrete", "holding", "input"]


class RegisterConfig(StrictModel):
    table: RegisterTable
    address: int = Field(ge=0, le=65535)
    type: Literal[RegisterType, "bool"] | None = None
    word_order: Literal["big", "little"] = "big"
    byte_order: Literal["big", "little"] = "big"
    # A single bit of a status register (0 = least significant).
    bit: int | None = Field(default=None, ge=0, le=15)

    @model_validator(mode="after")
    def _type_fits_table(self) -> RegisterConfig:
        is_bit_table = self.table in ("coil", "discrete")
        if is_bit_table and self.type not in (None, "bool"):
            raise ValueError(f"a {self.table} is one bit: type must be bool, not {self.type}")
        if not is_bit_table and self.type == "bool" and self.bit is None:
            raise ValueError("type bool on a register table needs 'bit' (which bit to read)")
        if self.bit is not None and self.type not in (None, "bool", "uint16", "int16"):
            raise ValueError("'bit' reads one bit of a 16-bit register: use type uint16")
        return self

    @property
    def value_type(self) -> str:
        if self.table in ("coil", "discrete") or self.bit is not None:
            return "bool"
        return self.type or "uint16"

    @property
    def width(self) -> int:
        """Registers (or bits, for coil/discrete tables) this point occupies."""
        vt = self.value_type
        return 1 if vt == "bool" else register_count(vt)


class PointConfig(StrictModel):
    """One value of a device: where it sits in the register map and what it measures."""

    id: Ident
    quantity: Quantity = "other"
    unit: str = ""
    # Modbus devices locate a point by its register; serial-line devices by a named group
    # of their line pattern, GNSS receivers by a GNSS_FIELDS name. Which one a point needs
    # depends on its device's bus, so the cross-check enforces it.
    register: RegisterConfig | None = None
    field: str | None = None
    scale: float = 1.0
    offset: float = 0.0
    # Applied after scale/offset: linear, polynomial, vibrating_wire, v_notch_weir.
    calibration: Calibration | None = None
    # The register is a tipping-bucket pulse counter: the reading becomes the rain (mm)
    # since the previous poll, with wrap-around and device resets handled.
    tipping_bucket: TippingBucketCounter | None = None
    # Physical range of the sensor; a value outside it is stored as bad, not alarmed on.
    range: tuple[float, float] | None = None

    @model_validator(mode="after")
    def _one_conversion(self) -> PointConfig:
        if self.calibration is not None and self.tipping_bucket is not None:
            raise ValueError("a point is either a calibrated sensor or a tipping-bucket "
                             "counter, not both")
        return self


class LineFormat(StrictModel):
    """What a serial-line instrument prints and, for request/response ones, what it is sent."""

    # Sent at each poll, e.g. "READ\r\n" (YAML double quotes give real CR/LF). Without a
    # command the instrument is free-running: the last matching line of each interval wins.
    command: str | None = Field(default=None, min_length=1)
    # Searched in each received line (CR, LF or CRLF ended); each point names a group.
    pattern: str

    @field_validator("pattern")
    @classmethod
    def _named_groups(cls, value: str) -> str:
        try:
            compiled = re.compile(value)
        except re.error as exc:
            raise ValueError(f"pattern is not a valid regular expression: {exc}") from None
        if not compiled.groupindex:
            raise ValueError("pattern needs named groups, e.g. (?P<level>[-+0-9.]+), "
                             "which points name with 'field'")
        return value

    @property
    def groups(self) -> list[str]:
        return list(re.compile(self.pattern).groupindex)


class DeviceConfig(StrictModel):
    id: Ident
    bus: Ident
    unit: int = Field(default=1, ge=0, le=247)
    poll_interval_s: float = Field(gt=0, le=86400)
    # Merge reads of nearby registers into one request; turn off for devices that reject
    # reads spanning unmapped registers.
    coalesce: bool = True
    max_gap: int = Field(default=10, ge=0, le=120)
    offline_after: int = Field(default=3, ge=1, le=100)
    # serial_line devices: the command and the line pattern.
    line: LineFormat | None = None
    # nmea_gnss devices: the station's surveyed position and the fix quality required.
    baseline: GnssBaseline | None = None
    points: list[PointConfig] = Field(min_length=1)


# Each rule type's model lives beside the rule in rules/; the old name stays importable.
ThresholdRule = ThresholdConfig

RuleConfig = Annotated[
    ThresholdConfig | RateConfig | AccumulationConfig | QualityConfig | HstConfig
    | LagCorrelationConfig,
    Field(discriminator="type"),
]


class HealthConfig(StrictModel):
    # How often the health topic and the local status file are refreshed.
    interval_s: float = Field(default=60.0, ge=1, le=3600)


class CommandsConfig(StrictModel):
    enabled: bool = True
    # Commands refused by this gateway, e.g. [reload_config, ack_alarm] on a site where
    # only the keeper on site may change state.
    disabled: list[Literal["inspect", "ack_alarm", "get_status", "reload_config",
                           "get_readings", "resend"]] = Field(default_factory=list)


class LoggingConfig(StrictModel):
    # Logs go to stderr: JSON lines when not on a terminal (journald), columns on one.
    level: Literal["debug", "info", "warning", "error"] = "info"


class GatewaySettings(StrictModel):
    """The whole configuration of one gateway."""

    site: SiteConfig
    gateway: GatewayConfig
    mqtt: MqttConfig
    store: StoreConfig
    buses: list[BusConfig] = Field(default_factory=list)
    devices: list[DeviceConfig] = Field(default_factory=list)
    rules: list[RuleConfig] = Field(default_factory=list)
    # Points computed from other points (rules/derived.py), e.g. freeboard.
    derived: list[DerivedPointConfig] = Field(default_factory=list)
    health: HealthConfig = Field(default_factory=HealthConfig)
    commands: CommandsConfig = Field(default_factory=CommandsConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    def bus(self, bus_id: str) -> ModbusTcpBus | SerialBus:
        return next(b for b in self.buses if b.id == bus_id)

    def point(self, ref: str) -> tuple[DeviceConfig, PointConfig]:
        device_id, point_id = ref.split("/", 1)
        device = next(d for d in self.devices if d.id == device_id)
        return device, next(p for p in device.points if p.id == point_id)

    def iter_points(self) -> Iterator[tuple[DeviceConfig, PointConfig]]:
        for device in self.devices:
            for point in device.points:
                yield device, point

    @property
    def topic_root(self) -> str:
        return f"{self.mqtt.topic_prefix}/{self.site.id}/{self.gateway.id}"


@dataclass(frozen=True)
class LoadedConfig:
    settings: GatewaySettings
    files: tuple[str, ...]
    digest: str  # sha256 of the validated settings: reported in health, compared on reload
    # Things that work but are fragile (FILE:LINE: key: why); `edge check` prints them.
    warnings: tuple[str, ...] = ()


class ConfigError(Exception):
    """The configuration is invalid; ``problems`` lists every error with file and line."""

    def __init__(self, problems: list[ConfigProblem]):
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


# --- turning pydantic's errors into FILE:LINE: key.path: message -------------------------

def _data_path(data: Any, loc: tuple[str | int, ...]) -> PathKey:
    """Map a pydantic error location onto the path in the YAML data.

    Discriminated unions insert the tag (e.g. ``modbus_tcp``) into ``loc``; those parts
    have no counterpart in the data and are dropped.
    """
    path: list[str | int] = []
    current = data
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        in_mapping = isinstance(current, dict) and isinstance(part, str) and part in current
        in_list = (isinstance(current, list) and isinstance(part, int)
                   and 0 <= part < len(current))
        if in_mapping or in_list:
            path.append(part)
            current = current[part]
        elif last and isinstance(part, str) and isinstance(current, dict):
            path.append(part)  # a missing key: report it at its parent's line
        else:
            continue
    return tuple(path)


def _allowed_keys(model: type[StrictModel], data: Any, path: PathKey) -> list[str]:
    """The keys the model at ``path`` accepts, for did-you-mean hints.

    Walks the annotations alongside the data, so a list item of a union (a rule, a bus)
    resolves to the model its own ``type`` names, not the first item's.
    """
    annotation: Any = model
    node = data
    for part in path[:-1]:
        if isinstance(part, int):
            annotation = _list_item(annotation)
            node = node[part] if isinstance(node, list) and 0 <= part < len(node) else None
            continue
        current = _unwrap_model(annotation, node)
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        annotation = field.annotation
        node = node.get(part) if isinstance(node, dict) else None
    return list(getattr(_unwrap_model(annotation, node), "model_fields", {}))


def _list_item(annotation: Any) -> Any:
    import typing

    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is list:
        return args[0]
    if origin is typing.Annotated:
        return _list_item(args[0])
    for arg in args:
        if typing.get_origin(arg) is list:
            return arg.__args__[0]
    return None


def _unwrap_model(annotation: Any, node: Any) -> Any:
    import typing

    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, StrictModel):
        return annotation
    if origin is typing.Annotated:
        return _unwrap_model(args[0], node)
    candidates = [a for a in args if isinstance(a, type) and issubclass(a, StrictModel)]
    if candidates and isinstance(node, dict) and "type" in node:
        for candidate in candidates:
            tag = candidate.model_fields.get("type")
            if tag is not None and node["type"] in typing.get_args(tag.annotation):
                return candidate
    for arg in args:
        found = _unwrap_model(arg, node)
        if found is not None:
            return found
    return None


def _message(error: dict[str, Any], allowed: list[str]) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    value = error.get("input")
    if kind == "extra_forbidden":
        import difflib  # only for messages: the daemon need not load it

        key = error["loc"][-1]
        hint = difflib.get_close_matches(str(key), allowed, n=1)
        suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
        known = f"; known keys: {', '.join(allowed)}" if allowed and not hint else ""
        return f"unknown key {key!r}{suggestion}{known}"
    if kind == "missing":
        return "required key is missing"
    if kind == "literal_error":
        expected = str(ctx.get("expected", "")).replace("'", "")
        return f"{value!r} is not one of {expected}"
    if kind == "union_tag_invalid":
        expected = str(ctx.get("expected_tags", "")).replace("'", "")
        return f"type {ctx.get('tag')!r} is not one of {expected}"
    if kind == "union_tag_not_found":
        return f"'{ctx.get('discriminator', 'type').strip(chr(39))}' is required"
    if kind == "string_pattern_mismatch":
        return (f"{value!r} is not a valid id: use 1-64 letters, digits, '_' or '-' "
                "(ids become MQTT topic levels)")
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind == "finite_number":
        # YAML's .inf, -.inf and .nan: no limit, level, coefficient or interval is infinite.
        return f"must be a finite number, got {value!r}"
    message = error["msg"]
    if value is not None and not isinstance(value, dict | list):
        message += f", got {value!r}"
    return message


def _validation_problems(doc: LocatedDocument, exc: ValidationError) -> list[ConfigProblem]:
    problems = []
    for error in exc.errors(include_url=False):
        path = _data_path(doc.data, tuple(error["loc"]))
        if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
            path = (*path, "type")
        allowed = (_allowed_keys(GatewaySettings, doc.data, path)
                   if error["type"] == "extra_forbidden" else [])
        problems.append(ConfigProblem(doc.locate(path), format_key_path(path),
                                      _message(error, allowed)))
    return problems


# --- checks across sections ----------------------------------------------------------------

def _cross_check(settings: GatewaySettings, doc: LocatedDocument) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []

    def problem(path: PathKey, message: str) -> None:
        problems.append(ConfigProblem(doc.locate(path), format_key_path(path), message))

    def duplicates(section: str, ids: list[str], what: str, base: PathKey = ()) -> None:
        seen: dict[str, int] = {}
        for index, item_id in enumerate(ids):
            if item_id in seen:
                first = doc.locate((*base, section, seen[item_id], "id"))
                problem((*base, section, index, "id"),
                        f"duplicate {what} id {item_id!r} (first defined at {first})")
            else:
                seen[item_id] = index

    duplicates("buses", [b.id for b in settings.buses], "bus")
    duplicates("devices", [d.id for d in settings.devices], "device")
    duplicates("rules", [r.id for r in settings.rules], "rule")
    bus_ids = [b.id for b in settings.buses]
    for d_index, device in enumerate(settings.devices):
        duplicates("points", [p.id for p in device.points], f"point (device {device.id})",
                   ("devices", d_index))
        if device.bus not in bus_ids:
            problem(("devices", d_index, "bus"),
                    f"device {device.id!r} refers to bus {device.bus!r}, which is not defined "
                    f"(buses: {', '.join(bus_ids) or 'none'})")
        point_ids = [p.id for p in device.points]
        for p_index, point in enumerate(device.points):
            companions = point.calibration.companion_points() if point.calibration else ()
            for companion in companions:
                if companion not in point_ids or companion == point.id:
                    problem(("devices", d_index, "points", p_index, "calibration"),
                            f"point {device.id}/{point.id} needs companion point {companion!r} "
                            f"on the same device, which is not defined (points: "
                            f"{', '.join(point_ids)})")
            if point.range and point.range[0] >= point.range[1]:
                problem(("devices", d_index, "points", p_index, "range"),
                        f"range {list(point.range)} must be [min, max] with min < max")
    _check_devices_fit_buses(settings, problem)
    check_rules(settings, problem, doc.locate)
    tls = settings.mqtt.tls
    if tls is not None:
        for key in ("ca_file", "cert_file", "key_file"):
            file = getattr(tls, key)
            if file is not None and not file.is_file():
                problem(("mqtt", "tls", key), f"{file}: no such file")
    if settings.mqtt.password_file is not None and not settings.mqtt.password_file.is_file():
        problem(("mqtt", "password_file"), f"{settings.mqtt.password_file}: no such file")
    return problems


def _check_devices_fit_buses(settings: GatewaySettings,
                             problem: Callable[[PathKey, str], None]) -> None:
    """Each bus type dictates how a device addresses its points and what else it needs."""
    buses = {b.id: b for b in settings.buses}
    seen_on_bus: dict[str, str] = {}
    for d_index, device in enumerate(settings.devices):
        bus = buses.get(device.bus)
        if bus is None:
            continue
        here: PathKey = ("devices", d_index)
        modbus = bus.type in ("modbus_tcp", "modbus_rtu")
        if device.line is not None and bus.type != "serial_line":
            problem((*here, "line"), f"'line' is for devices on a serial_line bus; bus "
                    f"{bus.id!r} is {bus.type}")
        if device.baseline is not None and bus.type != "nmea_gnss":
            problem((*here, "baseline"), f"'baseline' is for devices on an nmea_gnss bus; "
                    f"bus {bus.id!r} is {bus.type}")
        if bus.type == "serial_line" and device.line is None:
            problem(here, f"device {device.id!r} on serial_line bus {bus.id!r} needs 'line' "
                    "(a pattern with named groups, and a command unless it is free-running)")
        if bus.type == "nmea_gnss" and device.baseline is None:
            problem(here, f"device {device.id!r} on nmea_gnss bus {bus.id!r} needs "
                    "'baseline' (lat_deg, lon_deg, height_m of the station)")
        # One receiver per port, and a free-running instrument owns its line: nothing
        # tells whose line is whose.
        exclusive = bus.type == "nmea_gnss" or (
            bus.type == "serial_line" and device.line is not None
            and device.line.command is None)
        first = seen_on_bus.get(bus.id)
        if first is not None and (exclusive or first.startswith("!")):
            problem((*here, "bus"), f"device {device.id!r} shares {bus.type} bus {bus.id!r} "
                    f"with {first.lstrip('!')!r}; a free-running instrument or GNSS "
                    "receiver must be alone on its port")
        seen_on_bus.setdefault(bus.id, ("!" if exclusive else "") + device.id)
        groups = device.line.groups if device.line is not None else []
        for p_index, point in enumerate(device.points):
            where: PathKey = (*here, "points", p_index)
            name = f"{device.id}/{point.id}"
            if modbus:
                if point.register is None:
                    problem(where, f"point {name} on {bus.type} bus {bus.id!r} needs "
                            "'register' (table, address, type)")
                if point.field is not None:
                    problem((*where, "field"), f"'field' is for serial_line and nmea_gnss "
                            f"points; on {bus.type} use 'register'")
                continue
            if point.register is not None:
                problem((*where, "register"), f"'register' is for Modbus points; on "
                        f"{bus.type} name the value with 'field'")
            if point.field is None:
                known = groups if bus.type == "serial_line" else list(GNSS_FIELDS)
                problem(where, f"point {name} on {bus.type} bus {bus.id!r} needs 'field' "
                        f"(one of: {', '.join(known) or 'none'})")
            elif bus.type == "serial_line" and device.line is not None \
                    and point.field not in groups:
                problem((*where, "field"), f"field {point.field!r} is not a named group of "
                        f"the line pattern (groups: {', '.join(groups)})")
            elif bus.type == "nmea_gnss" and point.field not in GNSS_FIELDS:
                problem((*where, "field"), f"field {point.field!r} is not a GNSS value "
                        f"(one of: {', '.join(GNSS_FIELDS)})")
            elif point.field in ("downstream_mm", "axis_mm") and device.baseline is not None \
                    and device.baseline.downstream_azimuth_deg is None:
                problem((*where, "field"), f"{point.field} needs "
                        "baseline.downstream_azimuth_deg (the dam's downstream direction)")


# USB serial adapters are numbered in the order the kernel finds them, so a replug or a
# second adapter can swap /dev/ttyUSB0 and /dev/ttyUSB1; by-id names follow the adapter.
_ENUMERATED_PORT = re.compile(r"^/dev/tty(USB|ACM)\d+$")


def _config_warnings(settings: GatewaySettings, doc: LocatedDocument) -> tuple[str, ...]:
    warnings_found: list[str] = []
    for b_index, bus in enumerate(settings.buses):
        if bus.type != "modbus_tcp" and _ENUMERATED_PORT.match(bus.port):
            path: PathKey = ("buses", b_index, "port")
            warnings_found.append(str(ConfigProblem(
                doc.locate(path), format_key_path(path),
                f"{bus.port} may point to another adapter after a replug or reboot; use "
                "its /dev/serial/by-id/... name")))
    return tuple(warnings_found)


def resolve_level(settings: GatewaySettings, value: float | str) -> float:
    """A limit's number: itself, or the named site level it refers to."""
    return settings.site.levels[value] if isinstance(value, str) else float(value)


def load_config(path: str | Path) -> LoadedConfig:
    """Read, validate and cross-check a configuration; raise ``ConfigError`` listing all."""
    try:
        doc = load_config_source(Path(path))
    except ConfigSourceError as exc:
        raise ConfigError(exc.problems) from None
    try:
        settings = GatewaySettings.model_validate(doc.data)
    except ValidationError as exc:
        raise ConfigError(_validation_problems(doc, exc)) from None
    problems = _cross_check(settings, doc)
    if problems:
        raise ConfigError(problems)
    canonical = json.dumps(settings.model_dump(mode="json"), sort_keys=True)
    return LoadedConfig(settings, tuple(doc.files),
                        hashlib.sha256(canonical.encode()).hexdigest()[:16],
                        _config_warnings(settings, doc))


__all__ = [
    "GNSS_FIELDS",
    "REGISTER_TYPES",
    "BusConfig",
    "ConfigError",
    "DeviceConfig",
    "GatewaySettings",
    "LineFormat",
    "LoadedConfig",
    "ModbusRtuBus",
    "ModbusTcpBus",
    "NmeaGnssBus",
    "PointConfig",
    "RegisterConfig",
    "SerialBus",
    "SerialLineBus",
    "ThresholdRule",
    "load_config",
    "resolve_level",
]
