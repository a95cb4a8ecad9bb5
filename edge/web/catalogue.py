"""What the site's configuration says about each point the keeper's page shows.

The page groups a reservoir's points as a keeper reads them (docs/web.md): the reservoir
level against its characteristic levels (domain reference §2.4), rainfall sums (§2.3),
piezometers and hydraulic gradients (§2.2), displacement and settlement (§2.5), the rest.
This module derives that from the configuration alone, once per configuration: each
point's name, unit, section, expected interval, the age after which its latest reading is
stale, and the alarm limits drawn on its plot. The live part (latest readings, alarms)
is the port's (edge/web/keeper_port.py).

* **Sections** follow the configured ``quantity``. A derived point takes the section of
  its inputs; a dimensionless one computed from piezometers is a hydraulic gradient
  (J = ΔH/L). Rainfall sums of accumulation rules are rainfall.
* **Stale**: a device's reading is stale after ``offline_after`` poll intervals without a
  newer one (the buses call the device offline then); a derived point or a sum after 3
  intervals of its slowest input, as the rules judge their inputs (rules/base.py).
* **Limit lines**: threshold limits (site levels resolved) on their point, and the
  rainfall limits of accumulation rules on their sums. Rate, HST and correlation limits
  are on a rate, a residual or a coefficient, not on the point's value, so a line on the
  point's plot would put them at a meaningless height: they are not drawn.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edge.config import GatewaySettings, resolve_level
from edge.web.port import CharacteristicLevel, LimitLine, RainfallSum, RainWindow, Section, SiteInfo
from rules.engine import dependency_order, producer_specs, rule_env

__all__ = ["Catalogue", "PointEntry", "section_of"]

STALE_INTERVALS = 3.0  # as rules judge an input stale (RuleEnv.stale_after_ms)

_SECTIONS: dict[str, Section] = {
    "water_level": "level",
    "rainfall": "rainfall",
    "rainfall_counter": "rainfall",
    "seepage_pressure": "seepage",
    "piezometric_level": "seepage",
    "seepage_flow": "seepage",
    "weir_head": "seepage",
    "displacement": "displacement",
    "settlement": "displacement",
}
_WINDOWS: dict[float, RainWindow] = {3600: "1h", 10_800: "3h", 21_600: "6h", 43_200: "12h",
                                     86_400: "24h"}


def section_of(quantity: str) -> Section:
    return _SECTIONS.get(quantity, "other")


@dataclass(frozen=True, slots=True)
class PointEntry:
    """A point as configured: everything the page shows of it but its latest reading."""

    ref: str  # device/point
    name: str
    unit: str
    quantity: str
    section: Section
    interval_s: float | None
    stale_after_ms: int
    limits: tuple[LimitLine, ...] = ()


def _limit_lines(settings: GatewaySettings) -> dict[str, list[LimitLine]]:
    """Threshold limits on their point; accumulation limits on their sums."""
    lines: dict[str, list[LimitLine]] = {}

    def add(ref: str, limits: Sequence[Any], side: str, rule: str) -> None:
        for limit in limits:
            lines.setdefault(ref, []).append(LimitLine(
                resolve_level(settings, limit.value), limit.severity,
                "high" if side == "high" else "low", rule))

    for rule in settings.rules:
        if rule.type == "threshold":
            add(rule.point, rule.high, "high", rule.id)
            add(rule.point, rule.low, "low", rule.id)
        elif rule.type == "accumulation":
            device = rule.virtual_device
            for window in rule.windows:
                add(f"{device}/{window.point_id}", window.high, "high", rule.id)
            for part in (rule.day, rule.event):
                if part is not None:
                    add(f"{device}/{part.name}", part.high, "high", rule.id)
    return lines


def _rainfall(settings: GatewaySettings) -> tuple[RainfallSum, ...]:
    """The sums of the site's first accumulation rule: its standard windows and its day."""
    rule = next((r for r in settings.rules if r.type == "accumulation"), None)
    if rule is None:
        return ()
    sums = [RainfallSum(_WINDOWS[w.window], f"{rule.virtual_device}/{w.point_id}")
            for w in rule.windows if w.window in _WINDOWS]
    if rule.day is not None:
        sums.append(RainfallSum("day", f"{rule.virtual_device}/{rule.day.name}"))
    return tuple(sums)


def _level_point(settings: GatewaySettings) -> str | None:
    """The reservoir level: the water level a rule judges against a named site level (a
    tailwater gauge is not judged against flood levels), else the first water level."""
    levels = [f"{d.id}/{p.id}" for d, p in settings.iter_points()
              if p.quantity == "water_level"]
    for rule in settings.rules:
        if rule.type == "threshold" and rule.point in levels and any(
                isinstance(limit.value, str) for limit in (*rule.high, *rule.low)):
            return str(rule.point)
    return levels[0] if levels else None


class Catalogue:
    """The points of one configuration, in the order the page lists them: the devices'
    points, then derived points, then the sums of accumulation rules."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.site = SiteInfo(
            id=settings.site.id, name=settings.site.name, gateway=settings.gateway.id,
            timezone=settings.site.timezone,
            levels=tuple(CharacteristicLevel(key, value) for key, value in sorted(
                settings.site.levels.items(), key=lambda item: item[1])),
            level_point=_level_point(settings), rainfall=_rainfall(settings))
        self.points: tuple[PointEntry, ...] = tuple(self._entries())
        self.by_ref: Mapping[str, PointEntry] = {p.ref: p for p in self.points}

    def _entries(self) -> Iterator[PointEntry]:
        settings = self.settings
        limits = _limit_lines(settings)
        rule_site = settings.rule_site()
        specs = dependency_order(producer_specs(rule_site))
        intervals = rule_env(rule_site, specs, None).intervals_s
        sections: dict[str, Section] = {}
        for device, point in settings.iter_points():
            ref = f"{device.id}/{point.id}"
            sections[ref] = section_of(point.quantity)
            yield PointEntry(ref, point.name, point.unit, point.quantity, sections[ref],
                             device.poll_interval_s,
                             int(device.offline_after * device.poll_interval_s * 1000),
                             tuple(limits.get(ref, ())))
        derived: list[PointEntry] = []
        sums: list[PointEntry] = []
        for spec in specs:  # inputs before the points computed from them
            for ref in spec.outputs:
                interval = intervals.get(ref, 60.0)
                stale = int(STALE_INTERVALS * interval * 1000)
                unit = spec.units.get(ref, "")
                if spec.from_rule and spec.config.type == "accumulation":
                    sections[ref] = "rainfall"
                    sums.append(PointEntry(ref, "", unit, "rainfall", "rainfall",
                                           interval, stale, tuple(limits.get(ref, ()))))
                    continue
                inputs = {sections.get(x, "other") for x in spec.inputs}
                section: Section = next(iter(inputs)) if len(inputs) == 1 else "other"
                # A rule's published reading (a potential, a forecast) is named by its type.
                quantity = spec.config.type if spec.from_rule else "derived"
                if section == "seepage" and not unit and not spec.from_rule:
                    section, quantity = "gradient", "gradient"
                sections[ref] = section
                name = "" if spec.from_rule else spec.config.name
                derived.append(PointEntry(ref, name, unit, quantity, section,
                                          interval, stale, tuple(limits.get(ref, ()))))
        order = {d.key: i for i, d in enumerate(settings.derived)}
        yield from sorted(derived, key=lambda p: order.get(p.ref, len(order)))
        yield from sums
