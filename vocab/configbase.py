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

import importlib
from collections.abc import Callable
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
    """Make a validated configuration's repeated small values one object each, in place.

    A site of 200 devices × 10 points holds each point's register type, table, word order,
    unit and quantity as a string of its own (the YAML parser makes one per occurrence)
    and each model's set of fields given as a set of its own: 3.9 MiB of the daemon's
    memory, 2.4 MiB with equal strings and equal sets shared. Done before pickling, so
    the daemon unpickles them shared. Nothing changes for a reader: the strings are equal,
    and a fields set is never changed in place (``model_copy`` copies it first).
    """
    strings: dict[str, str] = {}
    field_sets: dict[frozenset[str], set[str]] = {}
    seen: set[int] = set()
    pending: list[object] = [root]

    def shared(value: object) -> object:
        if type(value) is str and len(value) <= _SHARED_STRING_LEN:
            return strings.setdefault(value, value)
        pending.append(value)
        return value

    while pending:
        item = pending.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, BaseModel):
            fields = item.__dict__
            for key, value in fields.items():
                fields[key] = shared(value)
            given = item.__pydantic_fields_set__
            # Frozen models refuse setattr; the fields set is bookkeeping, not a field.
            object.__setattr__(item, "__pydantic_fields_set__",
                               field_sets.setdefault(frozenset(given), given))
        elif isinstance(item, list):
            item[:] = [shared(value) for value in item]
        elif isinstance(item, dict):
            for key, value in item.items():
                item[key] = shared(value)
        elif isinstance(item, tuple):
            pending.extend(item)
