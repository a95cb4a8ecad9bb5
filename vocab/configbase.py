"""Base for every configuration model: unknown keys are errors, values are immutable.

A typo in a site's YAML (``poll_intervall_s``) must fail ``edge check`` rather than be
silently ignored, so every model forbids extra keys.

YAML has ``.inf``, ``-.inf`` and ``.nan``, and a float field takes them unless told not
to: ``site.levels.crest: .inf`` was accepted, and an infinite limit never alarms. No
limit, level, coefficient, interval or duration of a site is infinite or not a number, so
every model refuses them (pydantic's ``allow_inf_nan=False``; the error type is
``finite_number``).
"""

from __future__ import annotations

import gc
import importlib
from collections.abc import Callable, Hashable
from typing import Annotated, Any, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    ModelWrapValidatorHandler,
    ValidationError,
    model_validator,
)
from pydantic_core import CoreSchema


class StrictModel(BaseModel):
    """A configuration model that rejects unknown keys and non-finite numbers and cannot be
    mutated."""

    # defer_build: a model builds its validator when first used, not when its module is
    # imported. The daemon validates the site file in a forked child (edge/daemon_config.py)
    # and only unpickles the result, so it never builds the validators of the ~200 models
    # at all: 4 MiB of RSS and ~0.05 s of start-up (docs/performance.md).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False,
                              defer_build=True)

    @model_validator(mode="wrap")
    @classmethod
    def _non_finite_reported_once(
        cls, data: Any, handler: ModelWrapValidatorHandler[Any]
    ) -> Any:
        """Drop the "not a string" error beside a "not a finite number" one.

        A field that is a number or a name (``value: float | Ident``, a limit given as a
        number or as a site level) fails both ways on ``.inf``; the second error would tell
        the user to write a string, which is not what is wrong.
        """
        try:
            return handler(data)
        except ValidationError as exc:
            errors = exc.errors(include_url=False)
            # Union members add their name to the location; siblings share the rest.
            non_finite = {e["loc"][:-1] for e in errors if e["type"] == "finite_number"}
            kept = [e for e in errors
                    if not (e["type"] == "string_type" and e["loc"][:-1] in non_finite)]
            if len(kept) == len(errors):
                raise
            try:
                rebuilt = ValidationError.from_exception_data(exc.title, [
                    {"type": e["type"], "loc": e["loc"], "input": e["input"],
                     **({"ctx": e["ctx"]} if "ctx" in e else {})}
                    for e in kept
                ])
            except (KeyError, TypeError, ValueError):
                # An error type pydantic cannot rebuild (a custom one): report all as they were.
                raise exc from None
            raise rebuilt from None


class TypeTable:
    """``Annotated[Any, TypeTable(models)]``: one of the models a type table names (the bus
    and rule types, drivers/registry.py, rules/registry.py), told apart by ``type``.

    The union is made when pydantic first builds the validator of the model holding it
    (``defer_build``: in the configuration's own process, edge/daemon_config.py), not when
    that model's module is imported: the daemon, which only unpickles settings, then
    imports the modules of the types its site uses and no other.
    """

    def __init__(self, models: Callable[[], tuple[type, ...]]) -> None:
        self.models = models

    def union(self) -> Any:
        return Annotated[Union[self.models()],  # noqa: UP007  (a tuple of types)
                         Field(discriminator="type")]

    def __get_pydantic_core_schema__(self, source: Any,
                                     handler: GetCoreSchemaHandler) -> CoreSchema:
        return handler.generate_schema(self.union())


class LazyType:
    """``Annotated[Any, LazyType("drivers.nmea", "GnssBaseline")]``: an optional section's
    model, imported when pydantic first builds the validator of the model holding it.

    A section most sites never write (a GNSS baseline, a sensor's calibration) would
    otherwise load its module into every daemon: the parsers and models behind them cost
    about 1.5 MiB of RSS. The daemon only unpickles settings, so it imports the module
    when, and only when, its site's settings hold one of its objects.
    """

    def __init__(self, module: str, name: str) -> None:
        self.module = module
        self.name = name

    def resolve(self) -> Any:
        return getattr(importlib.import_module(self.module), self.name)

    def __get_pydantic_core_schema__(self, source: Any,
                                     handler: GetCoreSchemaHandler) -> CoreSchema:
        return handler.generate_schema(self.resolve())


# Strings longer than this are rarely repeated (names, expressions): not worth a lookup.
_SHARED_STRING_LEN = 64


def share_repeats(root: object) -> None:
    """Make a validated configuration's repeated values one object each, in place.

    A site of 200 devices × 10 points held each point's register type, table, word order,
    unit and quantity as a string of its own (the YAML parser makes one per occurrence),
    each model's set of the fields given as a set of its own, and each device its own
    models of points and registers equal to every other device's: a reservoir's loggers
    are alike (20 piezometers of one make each answer at register 0 as a float32). The
    unpickled settings took 3.9 MiB of the daemon's memory at that shape; 2.4 MiB with
    the strings and sets shared, and 0.6 MiB with equal frozen models one object too.

    Done before pickling, so the daemon unpickles them shared. Nothing changes for a
    reader: the values are equal, a frozen model is never changed, and a fields set is
    never changed in place (``model_copy`` copies it first). The walk is bottom-up: a
    model equals another when its fields do, once their own models have been shared, so
    a model's key names its fields' shared objects rather than their whole contents.
    """
    # The walk makes a key tuple for every value and no cycle: without the collector, which
    # would go over the whole settings tree again and again, it takes half the time.
    collecting = gc.isenabled()
    gc.disable()
    try:
        _Sharer().visit(root)
    finally:
        if collecting:
            gc.enable()


# Values compared by value and shared as they are (a float by its repr: 0.0 and -0.0 are
# equal, yet not the same setting).
_PLAIN = frozenset({int, bool, type(None)})


class _Sharer:
    """One walk of ``share_repeats``: what it has met so far."""

    def __init__(self) -> None:
        self.strings: dict[str, str] = {}
        self.field_sets: dict[frozenset[str], set[str]] = {}
        self.models: dict[Hashable, BaseModel] = {}
        self.done: dict[int, tuple[Hashable, object]] = {}
        self.walked: list[object] = []  # keeps the ids in ``done`` those of the objects

    def key(self, value: object) -> tuple[Hashable, object]:
        """(what tells ``value`` from unequal ones, the shared object for it)."""
        kind = type(value)
        if isinstance(value, str) and kind is str:
            if len(value) <= _SHARED_STRING_LEN:
                value = self.strings.setdefault(value, value)
            return (str, value), value
        if kind is float:
            return (float, repr(value)), value
        if kind in _PLAIN:
            return (kind, value), value
        known = self.done.get(id(value))
        if known is None:
            known = self.visit(value)
        return known

    def visit(self, value: object) -> tuple[Hashable, object]:
        self.walked.append(value)
        key: Hashable = ("object", id(value))
        replacement = value
        if isinstance(value, BaseModel):
            replacement = self.model(value)
            key = ("model", id(replacement))
        elif isinstance(value, list):
            # A list is never shared (it could be changed); its key tells its owner's.
            keys = []
            for index, item in enumerate(value):
                item_key, value[index] = self.key(item)
                keys.append(item_key)
            key = ("list", tuple(keys))
        elif isinstance(value, dict):
            parts = []
            for name, item in value.items():
                item_key, value[name] = self.key(item)
                parts.append((name, item_key))
            key = ("dict", tuple(parts))
        elif isinstance(value, tuple):
            visited = [self.key(item) for item in value]
            key = ("tuple", type(value), tuple(k for k, _ in visited))
            if any(new is not old for (_, new), old in zip(visited, value, strict=True)):
                items = [new for _, new in visited]
                replacement = (type(value)(*items) if hasattr(value, "_fields")
                               else type(value)(items))
        else:
            try:
                key = (type(value), value)
                hash(key)
            except TypeError:
                key = ("object", id(value))
        self.done[id(value)] = (key, replacement)
        return key, replacement

    def model(self, model: BaseModel) -> BaseModel:
        """``model`` with its fields shared, or the equal frozen model met before it."""
        fields = model.__dict__
        parts = []
        for name, item in fields.items():
            item_key, fields[name] = self.key(item)
            parts.append((name, item_key))
        given = model.__pydantic_fields_set__
        frozen_given = frozenset(given)
        # Frozen models refuse setattr; the fields set is bookkeeping, not a field.
        object.__setattr__(model, "__pydantic_fields_set__",
                           self.field_sets.setdefault(frozen_given, given))
        if not (model.model_config.get("frozen") and model.__pydantic_extra__ is None
                and model.__pydantic_private__ is None):
            return model
        return self.models.setdefault((type(model), tuple(parts), frozen_given), model)
