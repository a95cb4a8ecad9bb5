"""YAML loading that remembers where every value came from.

``edge check`` must answer ``site.yaml:14: devices[0].points[2].register.type: ...``, so
configuration is composed into PyYAML nodes (which carry marks) and turned into plain
Python while recording the file and line of every key path. A directory of ``*.yaml``
files is merged in name order: lists (buses, devices, rules, ...) are concatenated and
mappings are merged key by key, a later file overriding an earlier one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PathKey = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class SourceLine:
    file: str
    line: int  # 1-based

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong with a configuration, located as precisely as we can."""

    where: SourceLine | None
    key_path: str
    message: str

    def __str__(self) -> str:
        prefix = f"{self.where}: " if self.where else ""
        key = f"{self.key_path}: " if self.key_path else ""
        return f"{prefix}{key}{self.message}"


class ConfigSourceError(Exception):
    """The configuration could not be read or parsed; carries every problem found."""

    def __init__(self, problems: list[ConfigProblem]):
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


@dataclass
class LocatedDocument:
    """Plain data plus a map from key path to the line it was written on."""

    data: dict[str, Any] = field(default_factory=dict)
    lines: dict[PathKey, SourceLine] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)

    def locate(self, path: PathKey) -> SourceLine | None:
        """The line of ``path``, or of its closest ancestor that has one."""
        for end in range(len(path), -1, -1):
            found = self.lines.get(path[:end])
            if found is not None:
                return found
        return None


def format_key_path(path: PathKey) -> str:
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _construct(
    node: yaml.Node, path: PathKey, name: str, lines: dict[PathKey, SourceLine],
    problems: list[ConfigProblem],
) -> Any:
    lines.setdefault(path, SourceLine(name, node.start_mark.line + 1))
    if isinstance(node, yaml.MappingNode):
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                problems.append(ConfigProblem(SourceLine(name, key_node.start_mark.line + 1),
                                              format_key_path(path),
                                              "keys must be plain names, not lists or maps"))
                continue
            key = str(key_node.value)
            child = (*path, key)
            where = SourceLine(name, key_node.start_mark.line + 1)
            if key in result:
                # PyYAML keeps the last duplicate silently; a repeated key is almost
                # always a copy-paste slip, so it is an error here.
                problems.append(ConfigProblem(where, format_key_path(child),
                                              "duplicate key in the same mapping"))
                continue
            lines[child] = where
            result[key] = _construct(value_node, child, name, lines, problems)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [
            _construct(item, (*path, i), name, lines, problems)
            for i, item in enumerate(node.value)
        ]
    # Scalars: let the safe loader resolve ints, floats, bools, nulls.
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()


def load_yaml_file(path: Path) -> LocatedDocument:
    name = path.name
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        problem = ConfigProblem(None, "", f"cannot read {path}: {exc.strerror}")
        raise ConfigSourceError([problem]) from None
    except UnicodeDecodeError as exc:
        raise ConfigSourceError([ConfigProblem(SourceLine(name, 1), "",
                                               f"not UTF-8 text: {exc.reason}")]) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        what = " ".join(x for x in (exc.context, exc.problem) if x)
        raise ConfigSourceError([ConfigProblem(SourceLine(name, line), "",
                                               f"YAML syntax error: {what}")]) from None
    doc = LocatedDocument(files=[str(path)])
    if node is None:
        return doc
    problems: list[ConfigProblem] = []
    data = _construct(node, (), name, doc.lines, problems)
    if problems:
        raise ConfigSourceError(problems)
    if not isinstance(data, dict):
        raise ConfigSourceError([ConfigProblem(SourceLine(name, node.start_mark.line + 1), "",
                                               "the top level must be a mapping of sections "
                                               "(site, gateway, mqtt, store, buses, devices, "
                                               "rules)")])
    doc.data = data
    return doc


def _merge_into(target: LocatedDocument, source: LocatedDocument) -> None:
    for key, value in source.data.items():
        existing = target.data.get(key)
        if isinstance(existing, list) and isinstance(value, list):
            # Concatenated lists: items of the later file move down by len(existing).
            shift = len(existing)
            for path, where in source.lines.items():
                if len(path) >= 2 and path[0] == key and isinstance(path[1], int):
                    target.lines[(key, path[1] + shift, *path[2:])] = where
            existing.extend(value)
        elif isinstance(existing, dict) and isinstance(value, dict):
            existing.update(value)
            for path, where in source.lines.items():
                if len(path) >= 2 and path[0] == key:
                    target.lines[path] = where
        else:
            target.data[key] = value
            for path, where in source.lines.items():
                if path and path[0] == key:
                    target.lines[path] = where


def load_config_source(path: Path) -> LocatedDocument:
    """Load a YAML file, or every ``*.yaml`` file of a directory merged in name order."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
        if not files:
            raise ConfigSourceError([ConfigProblem(None, "", f"{path}: no *.yaml files")])
        merged = LocatedDocument()
        problems: list[ConfigProblem] = []
        for file in files:
            try:
                part = load_yaml_file(file)
            except ConfigSourceError as exc:
                problems.extend(exc.problems)
                continue
            _merge_into(merged, part)
            merged.files.append(str(file))
        if problems:
            raise ConfigSourceError(problems)
        return merged
    if not path.exists():
        raise ConfigSourceError([ConfigProblem(None, "", f"{path}: no such file or directory")])
    return load_yaml_file(path)
