"""How checks across a configuration report what they find.

Drivers and rules check their own part of a site (a device that needs a register, a rule
naming a point that does not exist) without knowing the file it came from: they report a
key path and a message, and the configuration loader turns the path into ``FILE:LINE``.
"""

from __future__ import annotations

from collections.abc import Callable

PathKey = tuple[str | int, ...]
"""Where a value sits in the configuration, e.g. ("devices", 2, "points", 0, "register")."""

Report = Callable[[PathKey, str], None]
"""``report(path, message)``: one problem, located by its key path."""
