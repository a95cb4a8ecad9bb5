"""The gateway's configuration: typed models, validation and located error messages.

Everything the daemon does is decided by these models, validated before anything starts.
The top-level shape (site, gateway, mqtt, store, buses, devices, rules) is a contract with
the people who write site files and with the platform; keys may be added, never renamed.
"""

from __future__ import annotations

import hashlib
import json
import re
import zoneinfo
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import Field, ValidationError, field_validator

from drivers.devices import DeviceConfig, PointConfig
from drivers.registry import bus_models, check_devices
from edge.channels import mqtt
from edge.channels.mqtt import MqttConfig
from edge.yamlsource import (
    ConfigProblem,
    ConfigSourceError,
    LocatedDocument,
    PathKey,
    format_key_path,
    load_config_source,
)
from rules.base import PointInfo, RuleSite
from rules.checks import check_rules
from rules.derived import DerivedPointConfig
from rules.registry import rule_models
from vocab.configbase import StrictModel
from vocab.ids import Ident


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


# The rule types' models, from the table in rules/registry.py.
RuleConfig = Annotated[Union[rule_models()],  # noqa: UP007  (a tuple of types, not a literal union)
                       Field(discriminator="type")]


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


# The bus types' models, from the table in drivers/registry.py.
BusConfig = Annotated[Union[bus_models()],  # noqa: UP007  (a tuple of types, not a literal union)
                      Field(discriminator="type")]


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

    def bus(self, bus_id: str) -> Any:
        return next(b for b in self.buses if b.id == bus_id)

    def point(self, ref: str) -> tuple[DeviceConfig, PointConfig]:
        device_id, point_id = ref.split("/", 1)
        device = next(d for d in self.devices if d.id == device_id)
        return device, next(p for p in device.points if p.id == point_id)

    def iter_points(self) -> Iterator[tuple[DeviceConfig, PointConfig]]:
        for device in self.devices:
            for point in device.points:
                yield device, point

    def rule_site(self) -> RuleSite:
        """What the rule engine is built from."""
        return RuleSite(self.site.language, self.site.timezone, dict(self.site.levels),
                        tuple(self.rules), tuple(self.derived),
                        {f"{d.id}/{p.id}": (d.poll_interval_s, p.unit)
                         for d, p in self.iter_points()})

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
    check_devices(settings.buses, settings.devices, problem)
    points = {f"{d.id}/{p.id}": PointInfo(p.quantity, p.unit, p.tipping_bucket is not None)
              for d, p in settings.iter_points()}
    check_rules(settings.rules, settings.derived, points, settings.site.levels,
                settings.store.retention_days, problem, doc.locate)
    mqtt.check(settings.mqtt, lambda path, message: problem(("mqtt", *path), message))
    return problems


# USB serial adapters are numbered in the order the kernel finds them, so a replug or a
# second adapter can swap /dev/ttyUSB0 and /dev/ttyUSB1; by-id names follow the adapter.
_ENUMERATED_PORT = re.compile(r"^/dev/tty(USB|ACM)\d+$")


def _config_warnings(settings: GatewaySettings, doc: LocatedDocument) -> tuple[str, ...]:
    warnings_found: list[str] = []
    for b_index, bus in enumerate(settings.buses):
        port = getattr(bus, "port", None)
        if isinstance(port, str) and _ENUMERATED_PORT.match(port):
            path: PathKey = ("buses", b_index, "port")
            warnings_found.append(str(ConfigProblem(
                doc.locate(path), format_key_path(path),
                f"{port} may point to another adapter after a replug or reboot; use "
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
    "BusConfig",
    "ConfigError",
    "DeviceConfig",
    "GatewaySettings",
    "LoadedConfig",
    "PointConfig",
    "load_config",
    "resolve_level",
]
