"""The gateway's configuration: typed models, validation and located error messages.

Everything the daemon does is decided by these models, validated before anything starts.
The top-level shape (site, gateway, mqtt, store, buses, devices, rules) is a contract with
the people who write site files and with the platform; keys may be added, never renamed.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator

from drivers.devices import DeviceConfig, PointConfig
from drivers.registry import bus_models, check_devices
from edge.channels import mqtt, notify_config
from edge.channels.mqtt import MqttConfig
from edge.channels.notify_config import NotifyConfig
from edge.commitwindow import MAX_COMMIT_WINDOW_MS
from edge.configdigest import settings_digests
from edge.configerrors import validation_problems
from edge.configsource import (
    ConfigProblem,
    ConfigSourceError,
    LocatedDocument,
    PathKey,
    format_key_path,
)
from edge.sl651_config import Sl651Config
from edge.sl651_config import check as check_sl651
from edge.web.config import WebConfig
from rules.base import PointInfo, RuleSite
from rules.derived import DerivedPointConfig
from rules.registry import rule_models
from vocab.configbase import StrictModel, TypeTable
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
    # NORMAL fsyncs only at checkpoints and may lose the last polls on power loss; their
    # seqs are never reused (reserved durably ahead, edge/durable.py).
    synchronous: Literal["full", "normal"] = "full"
    # Polls completing within this window share one transaction and one telemetry
    # message (alarms never wait): fewer WAL pages and fsyncs per reading. Unset: a
    # round of the fastest devices a commit, or on a small site polled fast as many
    # rounds as hold ~300 readings within 3 s (edge/commitwindow.py). 0 commits every
    # poll as it comes. Up to 10 s: a fsynced commit costs at least a 4 KiB page, so a
    # slow line of few readings a second spares its card only by committing several
    # seconds at once, its telemetry (never its alarms) published that much later.
    commit_window_ms: float | None = Field(default=None, ge=0, le=MAX_COMMIT_WINDOW_MS)
    # How long readings are kept; rules may not look further back than this.
    retention_days: int = Field(default=400, ge=1, le=36500)
    # The most the store may use. Past it, delivered history goes first, then unsent
    # telemetry is thinned 1 of N (alarms never); see docs/mqtt.md "Disk quota".
    quota_mb: float = Field(default=1024.0, ge=0.05, le=1_000_000)
    maintenance_interval_s: float = Field(default=30.0, ge=1, le=3600)
    # How often maintenance folds the telemetry messages into per-device history (one
    # index entry per device and fold rather than per poll; docs/performance.md).
    history_fold_s: float = Field(default=600.0, ge=10, le=86400)
    # How long a delivered telemetry message is kept as sent, for the `resend` command
    # (its readings stay in history either way; the quota may release it sooner).
    resend_horizon_s: float = Field(default=86400.0, ge=0, le=3_153_600_000)


# The rule types' models, from the table in rules/registry.py (imported when validating).
RuleConfig = Annotated[Any, TypeTable(rule_models)]


class HealthConfig(StrictModel):
    # How often the health topic and the local status file are refreshed.
    interval_s: float = Field(default=60.0, ge=1, le=3600)


class CommandsConfig(StrictModel):
    enabled: bool = True
    # Commands refused by this gateway, e.g. [reload_config, ack_alarm] on a site where
    # only the keeper on site may change state.
    disabled: list[Literal["inspect", "ack_alarm", "get_status", "reload_config",
                           "get_readings", "resend", "notify_test",
                           "sl651_test"]] = Field(
                               default_factory=list)
    # Where else an MQTT 5 requester may ask for its reply (ResponseTopic), besides
    # {root}/reply/...: the gateway publishes under its own identity, so only a subtree
    # the site names (and the broker's ACL lets the gateway write) is allowed.
    reply_prefix: str | None = Field(default=None, min_length=1, max_length=128)

    @field_validator("reply_prefix")
    @classmethod
    def _one_subtree(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if any(c in value for c in "+#\x00"):
            raise ValueError("a topic prefix, not a filter: no wildcards (+, #) or NUL")
        if value.startswith(("/", "$")) or value.endswith("/"):
            raise ValueError("must not start with / or $ or end with /: replies go to "
                             "<reply_prefix>/...")
        return value


class LoggingConfig(StrictModel):
    # Logs go to stderr: JSON lines when not on a terminal (journald), columns on one.
    level: Literal["debug", "info", "warning", "error"] = "info"


# The bus types' models, from the table in drivers/registry.py (imported when validating).
BusConfig = Annotated[Any, TypeTable(bus_models)]


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
    # The keeper's page (edge/web, docs/web.md): off unless configured.
    web: WebConfig | None = None
    # SMS to the people on duty, sirens by relay, escalation (edge/channels/notify_config.py).
    notify: NotifyConfig | None = None
    # Reports to hydrological centres in SL 651-2014 (edge/sl651_config.py, docs/sl651.md).
    sl651: Sl651Config | None = None

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
    # Digest of each bus, device, rule and derived point by (section, entry_key), from
    # edge/configdigest.py: what a reload compares to keep the running objects of those
    # that did not change.
    entry_digests: dict[tuple[str, str], bytes] = field(default_factory=dict)


class ConfigError(Exception):
    """The configuration is invalid; ``problems`` lists every error with file and line."""

    def __init__(self, problems: list[ConfigProblem]):
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


# --- checks across sections ----------------------------------------------------------------

def _cross_check(settings: GatewaySettings, doc: LocatedDocument) -> list[ConfigProblem]:
    # Here, not at the top: the daemon, which only unpickles settings, never checks rules,
    # and the checks load the expression parser (edge/daemon_config.py).
    from rules.checks import check_rules

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
    notify_config.check(settings, lambda path, message: problem(("notify", *path), message))
    check_sl651(settings, lambda path, message: problem(("sl651", *path), message))
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
    fastest = min(settings.devices, key=lambda d: d.poll_interval_s, default=None)
    chosen = settings.store.commit_window_ms
    # The automatic window is bounded by design (edge/commitwindow.py): only the site's
    # own choice is weighed against its polls.
    if fastest is not None and chosen is not None and chosen / 1000 > fastest.poll_interval_s / 2:
        # Telemetry waits up to the window before it is committed and published.
        path = ("store", "commit_window_ms")
        warnings_found.append(str(ConfigProblem(
            doc.locate(path), format_key_path(path),
            f"{chosen:g} ms is not well under the shortest poll "
            f"interval ({fastest.id}: {fastest.poll_interval_s:g} s): telemetry waits up "
            "to the window before it is published (alarms never wait); keep it under half "
            "unless the card's writes matter more")))
    return tuple(warnings_found)


def resolve_level(settings: GatewaySettings, value: float | str) -> float:
    """A limit's number: itself, or the named site level it refers to."""
    return settings.site.levels[value] if isinstance(value, str) else float(value)


def load_config(path: str | Path) -> LoadedConfig:
    """Read, validate and cross-check a configuration; raise ``ConfigError`` listing all."""
    # The parser only here: the daemon receives its settings parsed (edge/configsource.py).
    from edge.yamlsource import load_config_source

    try:
        doc = load_config_source(Path(path))
    except ConfigSourceError as exc:
        raise ConfigError(exc.problems) from None
    try:
        settings = GatewaySettings.model_validate(doc.data)
    except ValidationError as exc:
        raise ConfigError(validation_problems(GatewaySettings, doc, exc)) from None
    problems = _cross_check(settings, doc)
    if problems:
        raise ConfigError(problems)
    digest, entries = settings_digests(settings)
    return LoadedConfig(settings, tuple(doc.files), digest, _config_warnings(settings, doc),
                        entries)


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
