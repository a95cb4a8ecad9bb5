"""The digests of a site's settings: the whole (reported in health, compared on reload)
and each bus, device, rule and derived point (what a reload keeps, edge/daemon_config.py).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edge.config import GatewaySettings


# What a leaf piece of ``_canonical_pieces`` is told to: its path (keys and indexes) and text.
Leaf = Callable[[tuple[str | int, ...], str], None]


def _canonical_pieces(value: Any, depth: int = 2, path: tuple[str | int, ...] = (),
                      leaf: Leaf | None = None) -> Iterator[str]:
    """``json.dumps(value, sort_keys=True)`` in pieces: the top two levels piece by piece,
    each device, rule or section below them encoded whole (and handed to ``leaf``)."""
    if depth and isinstance(value, dict) and all(isinstance(k, str) for k in value):
        yield "{"
        for n, key in enumerate(sorted(value)):
            yield (", " if n else "") + json.dumps(key) + ": "
            yield from _canonical_pieces(value[key], depth - 1, (*path, key), leaf)
        yield "}"
    elif depth and isinstance(value, list):
        yield "["
        for n, item in enumerate(value):
            if n:
                yield ", "
            yield from _canonical_pieces(item, depth - 1, (*path, n), leaf)
        yield "]"
    else:
        text = json.dumps(value, sort_keys=True)
        if leaf is not None:
            leaf(path, text)
        yield text


# The lists whose items a reload can keep one by one (edge/daemon_config.py).
ENTRY_SECTIONS = ("buses", "devices", "rules", "derived")


def entry_key(section: str, entry: Any) -> str:
    """What names an entry of its section: a derived point by its device and id."""
    return f"{entry.device}/{entry.id}" if section == "derived" else str(entry.id)


def settings_digests(settings: GatewaySettings) -> tuple[str, dict[tuple[str, str], bytes]]:
    """sha256 of the settings' canonical JSON (sorted keys), its first 16 hex digits; and
    the first 16 bytes of the sha256 of each bus, device, rule and derived point's, by
    (section, ``entry_key``), from the same text.

    Hashed piece by piece rather than from one string: the whole text and its bytes were
    the largest transient of loading a 1,000-point site (3.1 MiB, where the rest peaks at
    about 6), and what loading leaves in CPython's arenas grows with that peak."""
    entries: dict[tuple[str, str], bytes] = {}

    def entry(path: tuple[str | int, ...], text: str) -> None:
        if len(path) == 2 and path[0] in ENTRY_SECTIONS:
            section, index = str(path[0]), int(path[1])
            key = entry_key(section, getattr(settings, section)[index])
            entries[(section, key)] = hashlib.sha256(text.encode()).digest()[:16]

    digest = hashlib.sha256()
    for piece in _canonical_pieces(settings.model_dump(mode="json"), leaf=entry):
        digest.update(piece.encode())
    return digest.hexdigest()[:16], entries
