"""The gateway's configuration: typed models, validation and located error messages.

Everything the daemon does is decided by these models, validated before anything starts.
The top-level shape (site, gateway, mqtt, store, buses, devices, rules) is a contract with
the people who write site files and with the platform; keys may be added, never renamed.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import warnings
import zoneinfo
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from drivers.calibration import Calibration
from drivers.registers import REGISTER_TYPES, RegisterType, register_count
from drivers.tipping_bucket import TippingBucketCounter
from edge.configbase import StrictModel
from edge.yamlsource import (
    ConfigProblem,
    ConfigSourceError,
    LocatedDocument,
    PathKey,
    format_key_path,
    load_config_source,
)

# Ids become MQTT topic levels and store keys. Some brokers close the connection on a
# topic level containing '.', ' ' or wildcards (see lessons.md), so ids stay in this set.
Ident = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
PointRef = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}/[A-Za-z0-9_-]{1,64}$")]

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


class ModbusTcpBus(StrictModel):
    id: Ident
    type: Literal["modbus_tcp"]
    host: str
    port: int = Field(default=502, ge=1, le=65535)
    timeout_s: float = Field(default=1.0, gt=0, le=60)
    retries: int = Field(default=0, ge=0, le=5)


class ModbusRtuBus(StrictModel):
    id: Ident
    type: Literal["modbus_rtu"]
    port: str
    baudrate: int = Field(default=9600, ge=300, le=921600)
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    timeout_s: float = Field(default=1.0, gt=0, le=60)
    retries: int = Field(default=0, ge=0, le=5)
    inter_request_delay_s: float = Field(default=0.0, ge=0, le=10)


BusConfig = Annotated[ModbusTcpBus | ModbusRtuBus, Field(discriminator="type")]

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
    register: RegisterConfig
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
    points: list[PointConfig] = Field(min_length=1)


class Limit(StrictModel):
    severity: Literal["warning", "alarm", "critical"]
    # A number, or the name of a site level (site.levels), e.g. flood_limit.
    value: float | Ident


class ThresholdRule(StrictModel):
    id: Ident
    type: Literal["threshold"]
    point: PointRef
    high: list[Limit] = Field(default_factory=list)
    low: list[Limit] = Field(default_factory=list)
    hysteresis: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _has_limits(self) -> ThresholdRule:
        if not self.high and not self.low:
            raise ValueError("a threshold rule needs at least one 'high' or 'low' limit")
        return self


RuleConfig = Annotated[ThresholdRule, Field(discriminator="type")]


class HealthConfig(StrictModel):
    # How often the health topic and the local status file are refreshed.
    interval_s: float = Field(default=60.0, ge=1, le=3600)


class CommandsConfig(StrictModel):
    enabled: bool = True
    # Commands refused by this gateway, e.g. [reload_config, ack_alarm] on a site where
    # only the keeper on site may change state.
    disabled: list[Literal["inspect", "ack_alarm", "get_status", "reload_config",
                           "get_readings"]] = Field(default_factory=list)


class GatewaySettings(StrictModel):
    """The whole configuration of one gateway."""

    site: SiteConfig
    gateway: GatewayConfig
    mqtt: MqttConfig
    store: StoreConfig
    buses: list[BusConfig] = Field(default_factory=list)
    devices: list[DeviceConfig] = Field(default_factory=list)
    rules: list[RuleConfig] = Field(default_factory=list)
    health: HealthConfig = Field(default_factory=HealthConfig)
    commands: CommandsConfig = Field(default_factory=CommandsConfig)

    def bus(self, bus_id: str) -> ModbusTcpBus | ModbusRtuBus:
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
    """The keys the model at ``path`` accepts, for did-you-mean hints."""
    current: Any = model
    node = data
    for part in path[:-1]:
        if isinstance(part, int):
            node = node[part] if isinstance(node, list) and part < len(node) else None
            continue
        node = node.get(part) if isinstance(node, dict) else None
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        current = _unwrap_model(field.annotation, node)
        if current is None:
            return []
    return list(getattr(current, "model_fields", {}))


def _unwrap_model(annotation: Any, node: Any) -> Any:
    import typing

    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, StrictModel):
        return annotation
    if origin is typing.Annotated:
        return _unwrap_model(args[0], node)
    if origin is list and isinstance(node, list) and node:
        return _unwrap_model(args[0], node[0])
    if origin is list:
        return _unwrap_model(args[0], None)
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
    points = {f"{d.id}/{p.id}" for d, p in settings.iter_points()}
    devices = {d.id for d in settings.devices}
    levels = settings.site.levels
    for r_index, rule in enumerate(settings.rules):
        if rule.point not in points:
            device_id = rule.point.split("/", 1)[0]
            where = ("device exists but has no such point" if device_id in devices
                     else f"no device {device_id!r}")
            problem(("rules", r_index, "point"),
                    f"rule {rule.id!r} refers to point {rule.point!r}, which is not defined "
                    f"({where})")
        for side in ("high", "low"):
            for l_index, limit in enumerate(getattr(rule, side)):
                if isinstance(limit.value, str) and limit.value not in levels:
                    known = ", ".join(levels) or "none defined"
                    problem(("rules", r_index, side, l_index, "value"),
                            f"rule {rule.id!r} uses site level {limit.value!r}, which is not in "
                            f"site.levels ({known})")
    return problems


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
                        hashlib.sha256(canonical.encode()).hexdigest()[:16])


__all__ = [
    "REGISTER_TYPES",
    "BusConfig",
    "ConfigError",
    "DeviceConfig",
    "GatewaySettings",
    "LoadedConfig",
    "ModbusRtuBus",
    "ModbusTcpBus",
    "PointConfig",
    "RegisterConfig",
    "ThresholdRule",
    "load_config",
    "resolve_level",
]
