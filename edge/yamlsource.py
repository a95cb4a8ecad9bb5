"""YAML loading that remembers where every value came from.

``edge check`` must answer ``site.yaml:14: devices[0].points[2].register.type: ...``, so
configuration is composed into PyYAML nodes (which carry marks) and turned into plain
Python while recording the file and line of every key path. A directory of ``*.yaml``
files is merged in name order: lists (buses, devices, rules, ...) are concatenated and
mappings are merged key by key, a later file overriding an earlier one.

What a file may expand to is bounded while PyYAML composes its node graph, before anything
becomes a Python object: a 500-byte file of chained anchors (the "billion laughs") would
otherwise expand to hundreds of millions of values (31 s and 237 MB in ``reload_config``,
3 GB in ``edge check``), and thousands of nested brackets would end in a RecursionError.
This is the defence go-yaml added after Kubernetes CVE-2019-11253 (it counts every node
decoded through an alias and fails with "document contains excessive aliasing" past
roughly 400,000 of them); here the size of each node's full expansion is computed once as
it is composed (an alias reuses its anchor's figure), so a bomb is refused in the time
it takes to read it. Every limit gives ``FILE:LINE: ...`` naming the limit.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from edge.configsource import (
    ConfigProblem,
    ConfigSourceError,
    LocatedDocument,
    PathKey,
    SourceLine,
    format_key_path,
)

MAX_FILE_BYTES = 4 * 1024 * 1024
"""A configuration file's size. config/example-site.yaml is 8 KB; a generated site of 1,000
vibrating-wire points with a threshold rule each is 560 KB, 7.5 times less than this. It
keeps a stray log or binary from being parsed (PyYAML's pure-Python scanner takes seconds
per MB)."""

MAX_EXPANDED_NODES = 400_000
"""YAML nodes (keys, values, lists, mappings) after every alias and merge key is expanded.
go-yaml's budget after CVE-2019-11253 is of the same order (about 400,000 alias-driven
decodes). config/example-site.yaml composes to 465 nodes and the 1,000-point site above to
58,773, 6.8 times less than this. A document just under the limit loads in ~2 s and
~65 MiB on the 2-core development machine; the billion-laughs file (387 million nodes) is
refused in milliseconds."""

MAX_DEPTH = 100
"""Nesting of mappings and lists, aliases expanded, the top level counting as 1. A site
nests 7 deep (the top level, devices, a device, points, a point, calibration, certificate);
100 keeps every recursive step (PyYAML's composer, ``_construct``) far from Python's
recursion limit of 1,000 frames, which 10,000 levels ran into."""

MAX_EXPANDED_TEXT = 16 * 1024 * 1024
"""Characters of all scalars after expansion: an alias to one long string repeated by the
thousand is small as nodes but not as text (published payloads, logs, `edge check`)."""


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
    # Scalars: the safe constructor makes ints, floats, bools and nulls of the tags the
    # composer resolved (a constructor alone: a whole loader per scalar cost ~10 µs each).
    return yaml.constructor.SafeConstructor().construct_object(node, deep=True)


class _LimitExceeded(Exception):
    def __init__(self, mark: yaml.Mark, message: str) -> None:
        super().__init__(message)
        self.line = mark.line + 1
        self.message = message


@dataclass(frozen=True, slots=True)
class _Expansion:
    """What a node amounts to once its aliases are expanded."""

    nodes: int
    depth: int
    text: int


class _Bounds(yaml.composer.Composer):
    """PyYAML's composer, composing nodes within the limits above.

    Each node's expansion is measured when its composition ends, from its children's
    (an alias returns its anchor's node, already measured), so the cost is that of the
    text as written, however far it would expand. The events come from the parser a
    loader below mixes in.
    """

    def _start_bounds(self) -> None:
        self._depth = 0
        self._measured: dict[int, _Expansion] = {}
        self._keep: list[yaml.Node] = []  # keeps ids in _measured unique while composing

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node:
        event = self.peek_event()
        is_alias = isinstance(event, yaml.AliasEvent)
        opens = isinstance(event, yaml.CollectionStartEvent)
        # Refused before composing further: recursion in PyYAML's composer is what 10,000
        # levels used to exhaust.
        if opens and self._depth >= MAX_DEPTH:
            raise _LimitExceeded(event.start_mark, f"nested more than {MAX_DEPTH} levels deep "
                                 f"(limit: depth {MAX_DEPTH})")
        self._depth += 1
        try:
            node: yaml.Node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        expansion = self._expansion_of(node)
        if expansion is None:
            if is_alias:
                # The anchor's node is still being composed: it contains itself.
                raise _LimitExceeded(event.start_mark, f"alias *{event.anchor} refers to a "
                                     "node that contains it, which expands without end")
            expansion = self._measure(node)
            self._measured[id(node)] = expansion
            self._keep.append(node)
        if expansion.nodes > MAX_EXPANDED_NODES:
            raise _LimitExceeded(event.start_mark, f"expands to more than "
                                 f"{MAX_EXPANDED_NODES:,} YAML nodes once aliases are "
                                 f"expanded (limit: nodes {MAX_EXPANDED_NODES:,})")
        if self._depth + expansion.depth > MAX_DEPTH:
            raise _LimitExceeded(event.start_mark, f"nests more than {MAX_DEPTH} levels deep "
                                 f"once aliases are expanded (limit: depth {MAX_DEPTH})")
        if expansion.text > MAX_EXPANDED_TEXT:
            raise _LimitExceeded(event.start_mark, f"expands to more than "
                                 f"{MAX_EXPANDED_TEXT:,} characters of text once aliases are "
                                 f"expanded (limit: text {MAX_EXPANDED_TEXT:,})")
        return node

    def _expansion_of(self, node: yaml.Node) -> _Expansion | None:
        """A node's figure, or None for a collection not measured yet.

        A scalar's is its own text, computed when asked rather than kept: scalars are most
        of a site's nodes, and an entry per node was a third of the composing peak.
        """
        if isinstance(node, yaml.ScalarNode):
            return _Expansion(1, 0, len(node.value))
        return self._measured.get(id(node))

    def _measure(self, node: yaml.Node) -> _Expansion:
        children: list[yaml.Node] = (
            [part for pair in node.value for part in pair]
            if isinstance(node, yaml.MappingNode) else list(node.value))
        parts = [self._expansion_of(child) for child in children]
        # Every child ended its composition before its parent, so each has a figure.
        known = [p for p in parts if p is not None]
        return _Expansion(1 + sum(p.nodes for p in known),
                          1 + max((p.depth for p in known), default=0),
                          sum(p.text for p in known))


class _BoundedLoader(_Bounds, yaml.SafeLoader):
    """Pure-Python PyYAML within the limits: where PyYAML was built without libyaml."""

    def __init__(self, stream: str) -> None:
        self._marks: dict[int, yaml.Mark] = {}  # before PyYAML's scanner asks for one
        yaml.SafeLoader.__init__(self, stream)
        self._start_bounds()

    def get_mark(self) -> yaml.Mark:
        """One mark per line, shared by every token on it, instead of one per token.

        Only a mark's line is ever read here (errors are ``FILE:LINE``; PyYAML reads the
        column and the buffer only to print its own messages, which are not shown). PyYAML
        keeps two marks per node, each with its own ints: about 6 MiB of a 10.6 MiB peak
        for a 1,000-point site, and CPython's allocator does not give the arenas of such
        a peak back while the config objects built beside it live (docs/performance.md).
        """
        mark = self._marks.get(self.line)
        if mark is None:
            mark = self._marks[self.line] = yaml.Mark(self.name, 0, self.line, 0, None, None)
        return mark


try:  # PyYAML built with libyaml (Debian's python3-yaml and the PyPI wheels are)
    from yaml.cyaml import CParser as _CParser
except ImportError:
    _CParser = None


@functools.cache
def _fast_loader() -> Any:
    """libyaml scans and parses, our composer bounds: 0.75 -> 0.2 s for 1,000 points (the
    pure-Python scanner and parser were 4/5 of it; libyaml's marks die with the config
    child, edge/daemon_config.py)."""

    class _FastBoundedLoader(_Bounds, _CParser, yaml.resolver.Resolver):
        def __init__(self, text: str) -> None:
            _CParser.__init__(self, text)
            yaml.composer.Composer.__init__(self)
            yaml.resolver.Resolver.__init__(self)
            self._start_bounds()

    return _FastBoundedLoader


def _compose_with(loader_class: Any, text: str) -> yaml.Node | None:
    loader = loader_class(text)
    try:
        return loader.get_single_node()
    finally:
        loader.dispose()


def _compose(name: str, text: str) -> yaml.Node | None:
    try:
        if _CParser is not None:
            try:
                return _compose_with(_fast_loader(), text)
            except yaml.YAMLError:
                # Read again by PyYAML's own parser, for the messages users have always
                # had: libyaml's are terser ("did not find expected ','" without what it
                # found) and it stops 10,000 nested brackets at its own depth, not ours.
                pass
        return _compose_with(_BoundedLoader, text)
    except _LimitExceeded as exc:
        raise ConfigSourceError([ConfigProblem(SourceLine(name, exc.line), "",
                                               exc.message)]) from None


def _read_text(path: Path) -> str:
    name = path.name
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        problem = ConfigProblem(None, "", f"cannot read {path}: {exc.strerror}")
        raise ConfigSourceError([problem]) from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigSourceError([ConfigProblem(
            SourceLine(name, 1), "", f"file is larger than {MAX_FILE_BYTES:,} bytes "
            f"(limit: file size {MAX_FILE_BYTES:,} bytes)")])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigSourceError([ConfigProblem(SourceLine(name, line), "",
                                               f"not UTF-8 text: {exc.reason}")]) from None


def load_yaml_file(path: Path) -> LocatedDocument:
    name = path.name
    text = _read_text(path)
    try:
        node = _compose(name, text)
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
