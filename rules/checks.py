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
    devices = {key.split("/", 1)[0] for key in real}
    units = {key: p.unit for key, p in real.items()}

    # Points that exist without a device: derived points and rainfall sums.
    defined: dict[str, PathKey] = {}

    def virtual_device(device: str, example: str, path: PathKey) -> None:
        if device in devices:
            problem(path, f"{example!r} would belong to device {device!r}, a real device: "
                          "derived points need a device id of their own")

    def define(key: str, path: PathKey) -> None:
        # Defined even after a problem, so rules using it do not report it a second time.
        if key in defined:
            problem(path, f"duplicate point {key!r} (first defined at {locate(defined[key])})")
        elif key not in real:
            defined[key] = path

    for index, point in enumerate(derived):
        virtual_device(point.device, point.key, ("derived", index, "device"
                                                 if "device" in point.model_fields_set
                                                 else "id"))
        define(point.key, ("derived", index, "id"))
        units[point.key] = point.unit
    for index, rule in enumerate(rules):
        outputs = rule.outputs()
        if outputs:
            # A rule publishing sums names their device with 'device', else its id.
            path: PathKey = ("rules", index, "device" if getattr(rule, "device", None)
                             else "id")
            virtual_device(outputs[0].split("/", 1)[0], outputs[0], path)
        output_units = rule.output_units()
        for key in outputs:
            define(key, path)
            units[key] = output_units.get(key, "")

    known = set(real) | set(defined)
    all_devices = devices | {key.split("/", 1)[0] for key in defined}

    def unknown(key: str) -> str:
        device_id = key.split("/", 1)[0]
        return ("device exists but has no such point" if device_id in all_devices
                else f"no device {device_id!r}")

    def level_names() -> str:
        return ", ".join(levels) or "none defined"

    # Derived expressions: references, names, cycles.
    graph: dict[str, list[str]] = {}
    where: dict[str, PathKey] = {}
    for index, point in enumerate(derived):
        path = ("derived", index, "expression")
        try:
            expression = Expression.parse(point.expression)
        except ExpressionError as exc:  # the model validated it; kept for safety
            problem(path, str(exc))
            continue
        graph[point.key] = sorted(expression.point_refs)
        where[point.key] = path
        for ref in sorted(expression.point_refs - known):
            problem(path, f"derived point {point.key!r} refers to point {ref!r}, which is not "
                          f"defined ({unknown(ref)})")
        for name in sorted(expression.constant_refs):
            if name not in levels and name not in point.constants:
                problem(path, f"derived point {point.key!r} uses {name!r}, which is neither a "
                              f"site level ({level_names()}) nor one of its constants")
        for name in sorted(set(point.constants) & set(levels)):
            problem(("derived", index, "constants", name),
                    f"constant {name!r} has the name of a site level: rename it")
    for index, rule in enumerate(rules):
        for key in rule.outputs():
            graph[key] = [point for _, point in rule.read_points()]
            where[key] = ("rules", index, "point")
    cycle = find_cycle(graph)
    if cycle is not None:
        problem(where[cycle[0]], "circular derived points: " + " → ".join(cycle))

    retention_s = retention_days * 86400.0
    site = SiteView(real, frozenset(known), units, levels, retention_s,
                    {rule.id: rule for rule in rules})
    for r_index, rule in enumerate(rules):
        base: PathKey = ("rules", r_index)
        for path, key in rule.read_points():
            if key not in known:
                problem((*base, *path), f"rule {rule.id!r} refers to point {key!r}, which is "
                                        f"not defined ({unknown(key)})")
        for sub, limit in rule.limits():
            if isinstance(limit.value, str) and limit.value not in levels:
                problem((*base, *sub, "value"),
                        f"rule {rule.id!r} uses site level {limit.value!r}, which is not in "
                        f"site.levels ({level_names()})")
        for sub, name in rule.level_refs():
            if name not in levels:
                problem((*base, *sub), f"rule {rule.id!r} uses site level {name!r}, which is "
                                       f"not in site.levels ({level_names()})")
        for sub, seconds in rule.history_needs():
            if seconds > retention_s:
                problem((*base, *sub),
                        f"rule {rule.id!r} needs {format_duration(seconds)} of history, longer "
                        f"than the store keeps (store.retention_days: {retention_days})")

        def relative(path: PathKey, message: str, base: PathKey = base) -> None:
            problem((*base, *path), message)

        rule.check(site, relative)
