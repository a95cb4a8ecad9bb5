"""Turning pydantic's validation errors into ``FILE:LINE: key.path: message``.

A keeper or technician reads these on a terminal at the dam: each names the file and
line, the key path as written in the YAML, and what is wrong in plain words, with a
did-you-mean for a mistyped key.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from edge.configsource import ConfigProblem, LocatedDocument, PathKey, format_key_path
from vocab.configbase import LazyType, StrictModel, TypeTable


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
        table = next((m for m in args[1:] if isinstance(m, TypeTable)), None)
        lazy = next((m for m in args[1:] if isinstance(m, LazyType)), None)
        if lazy is not None:
            return _unwrap_model(lazy.resolve(), node)
        return _unwrap_model(args[0] if table is None else table.union(), node)
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


def validation_problems(model: type[StrictModel], doc: LocatedDocument,
                        exc: ValidationError) -> list[ConfigProblem]:
    problems = []
    for error in exc.errors(include_url=False):
        path = _data_path(doc.data, tuple(error["loc"]))
        if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
            path = (*path, "type")
        allowed = (_allowed_keys(model, doc.data, path)
                   if error["type"] == "extra_forbidden" else [])
        problems.append(ConfigProblem(doc.locate(path), format_key_path(path),
                                      _message(error, allowed)))
    return problems
