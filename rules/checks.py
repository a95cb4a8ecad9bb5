"""Checks of the rules and derived points against the rest of a configuration.

Called by the site configuration once every section has validated on its own, so
``edge check`` reports a rule that names an unknown point, a circular derived point or a
window longer than the retained history as ``FILE:LINE: key.path: message``, like every
other configuration error. What a rule reads and names comes from its config model
(``RuleShape``, rules/base.py), so a new rule type needs nothing here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rules.base import PointInfo, SiteView
from rules.expression import Expression, ExpressionError, find_cycle
from vocab.checking import PathKey, Report
from vocab.durations import format_duration

Locate = Callable[[PathKey], object]


def check_rules(rules: Sequence[Any], derived: Sequence[Any], real: Mapping[str, PointInfo],
                levels: Mapping[str, float], retention_days: int, problem: Report,
                locate: Locate) -> None:
    """Report every rule and derived-point problem through ``problem(path, message)``.

    ``real`` are the devices' points by key; ``derived`` the derived point configs.
    """
    checker = _SiteChecker(real, levels, problem, locate)
    checker.define_virtual_points(rules, derived)
    checker.check_derived(rules, derived)
    site = SiteView(real, frozenset(checker.known), checker.units, levels,
                    retention_days * 86400.0, {rule.id: rule for rule in rules})
    for index, rule in enumerate(rules):
        checker.check_rule(("rules", index), rule, site, retention_days)


class _SiteChecker:
    """The points a site defines, and the checks that resolve references against them."""

    def __init__(self, real: Mapping[str, PointInfo], levels: Mapping[str, float],
                 problem: Report, locate: Locate) -> None:
        self.real = real
        self.levels = levels
        self.problem = problem
        self.locate = locate
        self.devices = {key.split("/", 1)[0] for key in real}
        self.units = {key: p.unit for key, p in real.items()}
        # Points that exist without a device: derived points and rainfall sums.
        self.defined: dict[str, PathKey] = {}

    @property
    def known(self) -> set[str]:
        return set(self.real) | set(self.defined)

    def level_names(self) -> str:
        return ", ".join(self.levels) or "none defined"

    def unknown(self, key: str) -> str:
        device_id = key.split("/", 1)[0]
        all_devices = self.devices | {k.split("/", 1)[0] for k in self.defined}
        return ("device exists but has no such point" if device_id in all_devices
                else f"no device {device_id!r}")

    def _virtual_device(self, device: str, example: str, path: PathKey) -> None:
        if device in self.devices:
            self.problem(path, f"{example!r} would belong to device {device!r}, a real "
                               "device: derived points need a device id of their own")

    def _define(self, key: str, path: PathKey, unit: str) -> None:
        # Defined even after a problem, so rules using it do not report it a second time.
        if key in self.defined:
            self.problem(path, f"duplicate point {key!r} (first defined at "
                               f"{self.locate(self.defined[key])})")
        elif key not in self.real:
            self.defined[key] = path
        self.units[key] = unit

    def define_virtual_points(self, rules: Sequence[Any], derived: Sequence[Any]) -> None:
        for index, point in enumerate(derived):
            key = "device" if "device" in point.model_fields_set else "id"
            self._virtual_device(point.device, point.key, ("derived", index, key))
            self._define(point.key, ("derived", index, "id"), point.unit)
        for index, rule in enumerate(rules):
            outputs = rule.outputs()
            # A rule publishing sums names their device with 'device', else its id.
            path: PathKey = ("rules", index, "device" if getattr(rule, "device", None)
                             else "id")
            if outputs:
                self._virtual_device(outputs[0].split("/", 1)[0], outputs[0], path)
            output_units = rule.output_units()
            for key in outputs:
                self._define(key, path, output_units.get(key, ""))

    def check_derived(self, rules: Sequence[Any], derived: Sequence[Any]) -> None:
        """Derived expressions: references, names, and no circle through any producer."""
        graph: dict[str, list[str]] = {}
        where: dict[str, PathKey] = {}
        for index, point in enumerate(derived):
            path: PathKey = ("derived", index, "expression")
            try:
                expression = Expression.parse(point.expression)
            except ExpressionError as exc:  # the model validated it; kept for safety
                self.problem(path, str(exc))
                continue
            graph[point.key] = sorted(expression.point_refs)
            where[point.key] = path
            self._check_expression(index, point, expression)
        for index, rule in enumerate(rules):
            for key in rule.outputs():
                graph[key] = [point for _, point in rule.read_points()]
                where[key] = ("rules", index, "point")
        cycle = find_cycle(graph)
        if cycle is not None:
            self.problem(where[cycle[0]], "circular derived points: " + " → ".join(cycle))

    def _check_expression(self, index: int, point: Any, expression: Expression) -> None:
        path: PathKey = ("derived", index, "expression")
        for ref in sorted(expression.point_refs - self.known):
            self.problem(path, f"derived point {point.key!r} refers to point {ref!r}, which "
                               f"is not defined ({self.unknown(ref)})")
        for name in sorted(expression.constant_refs):
            if name not in self.levels and name not in point.constants:
                self.problem(path, f"derived point {point.key!r} uses {name!r}, which is "
                                   f"neither a site level ({self.level_names()}) nor one of "
                                   "its constants")
        for name in sorted(set(point.constants) & set(self.levels)):
            self.problem(("derived", index, "constants", name),
                         f"constant {name!r} has the name of a site level: rename it")

    def check_rule(self, base: PathKey, rule: Any, site: SiteView,
                   retention_days: int) -> None:
        """What every rule names must exist; then the rule type's own checks."""
        known = self.known
        for path, key in rule.read_points():
            if key not in known:
                self.problem((*base, *path), f"rule {rule.id!r} refers to point {key!r}, "
                                             f"which is not defined ({self.unknown(key)})")
        named = [((*sub, "value"), limit.value) for sub, limit in rule.limits()
                 if isinstance(limit.value, str)]
        for sub, name in [*named, *rule.level_refs()]:
            if name not in self.levels:
                self.problem((*base, *sub), f"rule {rule.id!r} uses site level {name!r}, "
                                            f"which is not in site.levels "
                                            f"({self.level_names()})")
        for sub, seconds in rule.history_needs():
            if seconds > site.retention_s:
                self.problem((*base, *sub),
                             f"rule {rule.id!r} needs {format_duration(seconds)} of history, "
                             f"longer than the store keeps (store.retention_days: "
                             f"{retention_days})")

        def relative(path: PathKey, message: str) -> None:
            self.problem((*base, *path), message)

        rule.check(site, relative)
