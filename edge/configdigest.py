"""The digests of a site's settings: the whole (reported in health, compared on reload)
and each bus, device, rule and derived point (what a reload keeps, edge/daemon_config.py).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edge.config import GatewaySettings


def _canonical_pieces(value: Any, depth: int = 2) -> Iterator[str]:
    """``json.dumps(value, sort_keys=True)`` in pieces: the top two levels piece by piece,
    each device, rule or section below them encoded whole."""
    if depth and isinstance(value, dict) and all(isinstance(k, str) for k in value):
        yield "{"
        for n, key in enumerate(sorted(value)):
            yield (", " if n else "") + json.dumps(key) + ": "
            yield from _canonical_pieces(value[key], depth - 1)
        yield "}"
    elif depth and isinstance(value, list):
        yield "["
        for n, item in enumerate(value):
            if n:
                yield ", "
            yield from _canonical_pieces(item, depth - 1)
        yield "]"
    else:
        yield json.dumps(value, sort_keys=True)


def settings_digest(settings: GatewaySettings) -> str:
    """sha256 of the settings' canonical JSON (sorted keys), its first 16 hex digits."""
    return settings_digests(settings)[0]


# The lists whose items a reload can keep one by one (edge/daemon_config.py).
ENTRY_SECTIONS = ("buses", "devices", "rules", "derived")


def entry_key(section: str, entry: Any) -> str:
    """What names an entry of its section: a derived point by its device and id."""
    return f"{entry.device}/{entry.id}" if section == "derived" else str(entry.id)


def settings_digests(settings: GatewaySettings) -> tuple[str, dict[tuple[str, str], str]]:
    """``settings_digest``, and the sha256 of each bus, device, rule and derived point's
    canonical JSON by (section, id).

    Hashed piece by piece rather than from one string: the whole text and its bytes were
    the largest transient of loading a 1,000-point site (3.1 MiB, where the rest peaks at
    about 6), and what loading leaves in CPython's arenas grows with that peak."""
    digest = hashlib.sha256()
    dumped = settings.model_dump(mode="json")
    entries: dict[tuple[str, str], str] = {}
    for section in ENTRY_SECTIONS:
        for entry, data in zip(getattr(settings, section), dumped[section], strict=True):
            text = json.dumps(data, sort_keys=True)
            entries[(section, entry_key(section, entry))] = hashlib.sha256(
                text.encode()).hexdigest()
    for piece in _canonical_pieces(dumped):
        digest.update(piece.encode())
    return digest.hexdigest()[:16], entries
