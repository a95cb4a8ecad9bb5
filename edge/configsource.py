"""Where a configuration's values came from, and what is wrong with them: the vocabulary
of configuration errors (``FILE:LINE: key.path: message``).

Apart from the YAML parser (edge/yamlsource.py) so that the daemon, which receives its
settings already validated (edge/daemon_config.py), never imports PyYAML or the parser
(0.8 MiB of its RSS) unless a reload has to parse in place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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
