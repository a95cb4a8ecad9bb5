"""Derived points: engineering quantities computed on the gateway from other points.

Models the derived quantities of the domain reference §2: freeboard (超高) = crest −
reservoir level (§2.4), the hydraulic gradient J = (H₁ − H₂)/L between two piezometers
and the exit gradient (§2.2), the safety factor J_cr/J, a piezometric level from a
pressure. They are declared in the top-level ``derived:`` list, not as rules, because
they raise nothing: they are points, published and stored like measured ones, and every
rule can use them (``derived/freeboard``).

A derived value is only as good as its inputs, so quality propagates: a missing or bad
input makes the derived reading bad (no value), a suspect input or one older than
``stale_after`` makes it suspect, and the reason names the input. A dry piezometer (water
below the sensor, vocab.model.DRY) is such a bad input: a gradient on it is not computed
and its reason says ``dry_input``. Rules on a derived
point then hold their alarms rather than judge it, as for a measured point.

```yaml
derived:
  - {id: freeboard, expression: "crest - {level-1/water_level}", unit: m}
  - id: gradient_1_2                     # J = (H1 - H2)/L, L = 12.5 m of seepage path
    expression: "({piezo-1/head} - {piezo-2/head}) / L"
    constants: {L: 12.5}
    stale_after: 2h                      # default: 3 poll intervals of the slowest input
```
Names in the expression are the site's characteristic levels (``crest``,
``flood_limit``, ...) and the point's own ``constants``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from pydantic import Field, field_validator

from rules.base import Context, RuleEnv
from vocab.configbase import StrictModel
from vocab.durations import Duration
from vocab.ids import Ident
from vocab.model import Quality, Reading

if TYPE_CHECKING:
    from rules.expression import Expression

# The expression parser (rules/expression.py, about 1 MiB of RSS once loaded) is imported
# where an expression is parsed, so that a daemon whose site has no derived point never
# loads it: it only unpickles settings another process has validated.

__all__ = ["DerivedPoint", "DerivedPointConfig", "build", "gather_inputs"]

_CONSTANT = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


class DerivedPointConfig(StrictModel):
    id: Ident
    # What the keeper calls it ("超高"), shown by the keeper's page in place of the id.
    name: str = ""
    # The virtual device the point belongs to; its readings are {device}/{id}.
    device: Ident = "derived"
    expression: str
    unit: str = ""
    constants: dict[str, float] = Field(default_factory=dict)
    stale_after: Duration | None = None

    @field_validator("expression")
    @classmethod
    def _parses(cls, text: str) -> str:
        from rules.expression import Expression

        Expression.parse(text)  # ExpressionError is a ValueError: reported with its column
        return text

    @field_validator("constants")
    @classmethod
    def _constant_names(cls, constants: dict[str, float]) -> dict[str, float]:
        for name in constants:
            if not _CONSTANT.match(name):
                raise ValueError(f"constant name {name!r}: use letters, digits and '_', "
                                 "starting with a letter")
        return constants

    @property
    def key(self) -> str:
        return f"{self.device}/{self.id}"


class DerivedPoint:
    """One derived point: evaluated whenever one of its inputs has a new reading."""

    def __init__(self, key: str, expression: Expression, unit: str,
                 constants: Mapping[str, float], stale_after_ms: Mapping[str, int]) -> None:
        self.key = key
        self.device, self.point = key.split("/", 1)
        self.expression = expression
        self.unit = unit
        self.constants = constants
        self.stale_after_ms = stale_after_ms
        self.inputs = tuple(sorted(expression.point_refs))
        # The parser's module is loaded by now: it made ``expression``.
        from rules.expression import ExpressionError

        self._evaluation_error = ExpressionError

    def compute(self, ctx: Context, ts_ms: int) -> Reading:
        values, bad, doubtful = gather_inputs(ctx, self.inputs, ts_ms, self.stale_after_ms)
        if bad:
            return self._reading(ts_ms, None, "bad", "; ".join(bad))
        try:
            value = round(self.expression.evaluate(values, self.constants), 9)
        except self._evaluation_error as exc:
            return self._reading(ts_ms, None, "bad", f"evaluation_error: {exc}")
        quality: Quality = "suspect" if doubtful else "good"
        return self._reading(ts_ms, value, quality, "; ".join(doubtful) or None)

    def _reading(self, ts_ms: int, value: float | None, quality: Quality,
                 reason: str | None) -> Reading:
        return Reading(self.device, self.point, ts_ms, value, self.unit, quality, None, reason)


def gather_inputs(ctx: Context, refs: Sequence[str], ts_ms: int,
                  stale_after_ms: Mapping[str, int]
                  ) -> tuple[dict[str, float], list[str], list[str]]:
    """The latest values of ``refs`` for a value stamped ``ts_ms``, and the reasons any is
    unusable (missing, bad, dry: the value is bad) or doubtful (suspect, stale: suspect)."""
    values: dict[str, float] = {}
    bad: list[str] = []
    doubtful: list[str] = []
    for ref in refs:
        reading = ctx.latest.get(ref)
        if reading is None:
            bad.append(f"missing_input: {ref}")
            continue
        if reading.dry:
            # The water is below the sensor: its level is unknown, so a gradient or
            # anything else on it is not computed, and says why.
            bad.append(f"dry_input: {ref} (water below the sensor)")
            continue
        if reading.quality == "bad" or reading.value is None:
            bad.append(f"bad_input: {ref} {reading.reason or 'no value'}")
            continue
        if reading.quality == "suspect":
            doubtful.append(f"suspect_input: {ref} {reading.reason or ''}".rstrip())
        age = ts_ms - reading.ts_ms
        if age > stale_after_ms[ref]:
            doubtful.append(f"stale_input: {ref} is {age / 1000:.0f} s old")
        values[ref] = reading.value
    return values, bad, doubtful


def build(config: DerivedPointConfig, env: RuleEnv) -> DerivedPoint:
    from rules.expression import Expression

    expression = Expression.parse(config.expression)
    constants = {**env.levels, **config.constants}
    stale_after = {
        ref: int(config.stale_after * 1000) if config.stale_after else env.stale_after_ms(ref)
        for ref in expression.point_refs
    }
    return DerivedPoint(config.key, expression, config.unit, constants, stale_after)
