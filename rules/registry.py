"""The rule-type table: which module serves each ``type`` of a site's ``rules``.

Each rule type is one module whose config model (a ``RuleShape``) says what it reads,
which limits and site levels it names, how much history it needs and anything only it
must check, and whose ``RULE_TYPE`` (rules/base.py) gives its factory. The site
configuration's rule union, the checks of rules against the site (rules/checks.py) and
the engine's construction are all built from this table: adding a rule type is one
module and one line here.
"""

from __future__ import annotations

from rules import (
    accumulation,
    hst,
    lag_correlation,
    potential,
    quality,
    rate,
    seepage_level,
    threshold,
    time_to_level,
)
from rules.base import RuleType

RULE_TYPES: dict[str, RuleType] = {
    rule_type.name: rule_type
    for rule_type in (threshold.RULE_TYPE, rate.RULE_TYPE, accumulation.RULE_TYPE,
                      quality.RULE_TYPE, hst.RULE_TYPE, lag_correlation.RULE_TYPE,
                      potential.RULE_TYPE, time_to_level.RULE_TYPE, seepage_level.RULE_TYPE)
}


def rule_models() -> tuple[type, ...]:
    """The config model of every rule type, for the site configuration's union."""
    return tuple(rule_type.config for rule_type in RULE_TYPES.values())
