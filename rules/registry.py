"""The rule-type table: which module serves each ``type`` of a site's ``rules``.

Each rule type is one module whose config model (a ``RuleShape``) says what it reads,
which limits and site levels it names, how much history it needs and anything only it
must check, and whose ``RULE_TYPE`` (rules/base.py) gives its factory. The site
configuration's rule union, the checks of rules against the site (rules/checks.py) and
the engine's construction are all built from this table: adding a rule type is one
module and one line here.

The table names modules rather than importing them: the daemon receives its settings
validated (edge/daemon_config.py), so it imports the module of each type its site uses,
when it unpickles that type's config, and never the others (0.9 MiB of RSS together with
the bus types', docs/performance.md). Validation, in its own process, imports them all.
"""

from __future__ import annotations

import importlib

from rules.base import RuleType

RULE_MODULES: dict[str, str] = {
    "threshold": "rules.threshold",
    "rate": "rules.rate",
    "accumulation": "rules.accumulation",
    "quality": "rules.quality",
    "hst": "rules.hst",
    "lag_correlation": "rules.lag_correlation",
    "potential": "rules.potential",
    "time_to_level": "rules.time_to_level",
    "seepage_level": "rules.seepage_level",
}


def rule_type(name: str) -> RuleType:
    """The rule type called ``name``; KeyError for a name not in the table."""
    found: RuleType = importlib.import_module(RULE_MODULES[name]).RULE_TYPE
    return found


def rule_models() -> tuple[type, ...]:
    """The config model of every rule type, for the site configuration's union."""
    return tuple(rule_type(name).config for name in RULE_MODULES)
