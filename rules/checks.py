"""Checks of the rules and derived points against the rest of a configuration.

Called by ``edge.config._cross_check`` once every section has validated on its own, so
``edge check`` reports a rule that names an unknown point, a circular derived point or a
window longer than the retained history as ``FILE:LINE: key.path: message``, like every
other configuration error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from rules.accumulation import AccumulationConfig
from rules.configtypes import Limit
from rules.expression import Expression, ExpressionError, find_cycle
from rules.hst import HstConfig
from rules.lag_correlation import LagCorrelationConfig
from rules.rate import RateConfig, rate_factor
from vocab.durations import format_duration

if TYPE_CHECKING:
    from edge.config import GatewaySettings

PathKey = tuple[str | int, ...]
Problem = Callable[[PathKey, str], None]
Locate = Callable[[PathKey], object]


def _limits(rule: Any) -> Iterator[tuple[PathKey, Limit]]:
    """Every limit of a rule with its key path, whatever the rule type."""
    for side in ("high", "low"):
        for index, limit in enumerate(getattr(rule, side, None) or []):
            yield (side, index), limit
    if isinstance(rule, AccumulationConfig):
        for w_index, window in enumerate(rule.windows):
            for index, limit in enumerate(window.high):
                yield ("windows", w_index, "high", index), limit
        for part in ("day", "event"):
            section = getattr(rule, part)
            for index, limit in enumerate(section.high if section else []):
                yield (part, "high", index), limit


def _history_needs(rule: Any) -> Iterator[tuple[PathKey, float]]:
    """The key paths and lengths (s) of history a rule reads back from the store."""
    if isinstance(rule, RateConfig):
        yield ("window",), rule.window
    elif isinstance(rule, AccumulationConfig):
        for index, window in enumerate(rule.windows):
            yield ("windows", index, "window"), window.window
    elif isinstance(rule, HstConfig) and rule.fit is not None:
        yield ("fit", "history"), rule.fit.history
    elif isinstance(rule, LagCorrelationConfig):
        yield ("window",), rule.window + rule.lag


def check_rules(settings: GatewaySettings, problem: Problem, locate: Locate) -> None:
    """Report every rule and derived-point problem through ``problem(path, message)``."""
    real = {f"{d.id}/{p.id}": p for d, p in settings.iter_points()}
    devices = {d.id for d in settings.devices}
    levels = settings.site.levels
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

    for index, point in enumerate(settings.derived):
        virtual_device(point.device, point.key, ("derived", index, "device"
                                                 if "device" in point.model_fields_set
                                                 else "id"))
        define(point.key, ("derived", index, "id"))
        units[point.key] = point.unit
    for index, rule in enumerate(settings.rules):
        if isinstance(rule, AccumulationConfig):
            path: PathKey = ("rules", index, "device" if rule.device else "id")
            outputs = rule.outputs()
            if outputs:
                virtual_device(rule.virtual_device, outputs[0], path)
            for key in outputs:
                define(key, path)
                units[key] = "mm"

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
    for index, point in enumerate(settings.derived):
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
    for index, rule in enumerate(settings.rules):
        if isinstance(rule, AccumulationConfig):
            for key in rule.outputs():
                graph[key] = [rule.point]
                where[key] = ("rules", index, "point")
    cycle = find_cycle(graph)
    if cycle is not None:
        problem(where[cycle[0]], "circular derived points: " + " → ".join(cycle))

    retention_s = settings.store.retention_days * 86400.0
    for r_index, rule in enumerate(settings.rules):
        base: PathKey = ("rules", r_index)
        refs: list[tuple[PathKey, str]] = [((*base, "point"), rule.point)]
        if isinstance(rule, HstConfig | LagCorrelationConfig):
            refs.append(((*base, "level"), rule.level))
        for path, key in refs:
            if key not in known:
                problem(path, f"rule {rule.id!r} refers to point {key!r}, which is not "
                              f"defined ({unknown(key)})")
        for sub, limit in _limits(rule):
            if isinstance(limit.value, str) and limit.value not in levels:
                problem((*base, *sub, "value"),
                        f"rule {rule.id!r} uses site level {limit.value!r}, which is not in "
                        f"site.levels ({level_names()})")
        if isinstance(rule, HstConfig) and isinstance(rule.head_reference, str) \
                and rule.head_reference not in levels:
            problem((*base, "head_reference"),
                    f"rule {rule.id!r} uses site level {rule.head_reference!r}, which is not "
                    f"in site.levels ({level_names()})")
        for sub, seconds in _history_needs(rule):
            if seconds > retention_s:
                problem((*base, *sub),
                        f"rule {rule.id!r} needs {format_duration(seconds)} of history, longer "
                        f"than the store keeps (store.retention_days: "
                        f"{settings.store.retention_days})")
        if isinstance(rule, RateConfig) and rule.point in known:
            try:
                rate_factor(rule.per, units.get(rule.point, ""))
            except ValueError as exc:
                problem((*base, "per"), f"rule {rule.id!r}: {exc}")
        if isinstance(rule, AccumulationConfig) and rule.point in real:
            point = real[rule.point]
            if point.quantity == "rainfall_counter" and point.tipping_bucket is None:
                problem((*base, "point"),
                        f"rule {rule.id!r}: point {rule.point!r} is a raw pulse counter; "
                        "accumulation needs rain increments in mm (configure tipping_bucket "
                        "on the point)")
            elif point.quantity not in ("rainfall", "rainfall_counter"):
                problem((*base, "point"),
                        f"rule {rule.id!r}: point {rule.point!r} measures {point.quantity}, "
                        "not rainfall")
