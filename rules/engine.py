"""Builds the configured rules and runs them over each poll's readings.

Per poll, in this order:

1. **quality screening**: every reading of a point with a ``quality`` rule is checked and
   possibly re-qualified (bad / suspect, with the reason); points that stopped reporting
   altogether are found offline here too;
2. **derived points**: derived expressions, and the readings rules publish (rainfall sums,
   piezometric potentials, forecasts), whose inputs changed are computed, in dependency
   order, from the screened latest values (and screened in turn);
3. **rules**: every rule whose input has a new reading judges it. A reading that is not
   good is not judged: the rule returns a ``Stale`` note instead, which holds the alarm
   state (an alarm is neither raised on doubtful data nor cleared because the data went
   away). Notes are returned in ``Evaluation.notes`` and logged when a rule goes stale and
   when it resumes, not on every poll.

Every rule evaluation is isolated: one that raises is logged and skipped, and the poll's
readings are still returned for storing. Transitions go through the storm limiter
(``rules.storm``), which releases them at a bounded rate without dropping any; call
``drain`` before discarding an engine.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import structlog

from rules.alarms import AlarmBook, is_external
from rules.base import (
    Context,
    HistoryProvider,
    Judgement,
    Producer,
    Rule,
    RuleEnv,
    RuleSite,
    Screen,
    Stale,
    Verdict,
)
from rules.derived import DerivedPoint
from rules.derived import build as build_derived
from rules.offline_schedule import OfflineSchedule
from rules.registry import rule_type
from rules.storm import StormLimiter
from vocab.model import ActiveAlarm, AlarmTransition, Reading

log = structlog.get_logger("rules.engine")


@dataclass(frozen=True, slots=True)
class RuleNote:
    """A rule that could not judge its point on this poll, and why."""

    rule: str
    point: str
    ts_ms: int
    reason: str


@dataclass(frozen=True, slots=True)
class Evaluation:
    """What the rules made of one poll: the readings to store (with any quality the
    screening changed, plus derived readings) and the alarm transitions to store now.

    ``notes`` are the rules that held their state for want of good input; ``deferred``
    is the number of transitions the storm limiter still holds for later polls.
    """

    readings: tuple[Reading, ...]
    transitions: list[AlarmTransition]
    notes: tuple[RuleNote, ...] = ()
    deferred: int = 0


# --- the static shape of the rule set --------------------------------------------------


@dataclass(frozen=True)
class ProducerSpec:
    """A derived expression or a rule publishing readings, before it is built."""

    outputs: tuple[str, ...]
    inputs: tuple[str, ...]  # a new reading of one of these makes it produce
    config: Any
    units: Mapping[str, str]  # of each output
    from_rule: bool  # a rule publishing readings, rather than a derived expression
    # Further points it reads (the reservoir level of a potential): their producers,
    # if any, must run before it.
    reads: tuple[str, ...] = ()


def producer_specs(site: RuleSite) -> list[ProducerSpec]:
    specs = _derived_specs(site) if site.derived else []
    specs += [ProducerSpec(tuple(r.outputs()), (r.point,), r, r.output_units(), True,
                           tuple(key for _, key in r.read_points()))
              for r in site.rules if r.outputs()]
    return specs


def _derived_specs(site: RuleSite) -> list[ProducerSpec]:
    # Only a site with derived points loads the expression parser (rules/derived.py).
    from rules.expression import Expression

    return [ProducerSpec((d.key,), tuple(sorted(Expression.parse(d.expression).point_refs)), d,
                          {d.key: d.unit}, False) for d in site.derived]


def dependency_order(specs: Sequence[ProducerSpec]) -> list[ProducerSpec]:
    """Producers ordered so that each comes after those whose outputs it reads."""
    made_by = {out: i for i, spec in enumerate(specs) for out in spec.outputs}
    needs = {i: {made_by[x] for x in (*spec.inputs, *spec.reads) if x in made_by}
             for i, spec in enumerate(specs)}
    order: list[int] = []
    done: set[int] = set()
    while len(order) < len(specs):
        ready = [i for i in range(len(specs)) if i not in done and needs[i] <= done]
        if not ready:
            raise ValueError("circular derived points (edge check reports which)")
        order.extend(ready)
        done.update(ready)
    return [specs[i] for i in order]


def rule_env(site: RuleSite, specs: Sequence[ProducerSpec],
             history: HistoryProvider | None, worker: Executor | None = None) -> RuleEnv:
    intervals = {key: interval for key, (interval, _) in site.points.items()}
    units = {key: unit for key, (_, unit) in site.points.items()}
    for spec in specs:
        # A derived value is as fresh as its slowest input.
        interval = max((intervals.get(x, 60.0) for x in spec.inputs), default=60.0)
        for out in spec.outputs:
            intervals[out] = interval
            units[out] = spec.units.get(out, "")
    return RuleEnv(dict(site.levels), site.timezone, intervals, units, history, worker,
                   {rule.id: rule for rule in site.rules})


# --- the engine --------------------------------------------------------------------------


class RuleEngine:
    def __init__(self, site: RuleSite, active: Iterable[ActiveAlarm] = (),
                 history: HistoryProvider | None = None, *, worker: Executor | None = None,
                 storm_burst: int = 20,
                 storm_per_minute: float = 20.0, storm_max_delay_s: float = 300.0) -> None:
        self.book = AlarmBook(site.language)
        specs = dependency_order(producer_specs(site))
        self.env = rule_env(site, specs, history, worker)
        self.units = self.env.units
        self.rules: dict[str, Any] = {}
        self.screens: dict[str, list[Screen]] = defaultdict(list)
        self.by_input: dict[str, list[Rule]] = defaultdict(list)
        for config in site.rules:
            rule = rule_type(config.type).build(config, self.env)
            self.rules[rule.id] = rule
            if isinstance(rule, Screen):
                self.screens[rule.point].append(rule)
                continue
            for key in rule.inputs:
                self.by_input[key].append(rule)
        self.producers: list[DerivedPoint | Producer] = [
            self.rules[spec.config.id] if spec.from_rule else build_derived(spec.config, self.env)
            for spec in specs]
        # Input point → indices (in dependency order) of the producers that read it.
        self.readers: dict[str, list[int]] = defaultdict(list)
        for index, spec in enumerate(specs):
            for key in spec.inputs:
                self.readers[key].append(index)
        self.latest: dict[str, Reading] = {}
        self.limiter = StormLimiter(storm_burst, storm_per_minute, storm_max_delay_s)
        self._storm_peak = 0  # the most transitions held back in the storm under way
        self.clock_ms: int | None = None
        self.stale: set[tuple[str, str]] = set()
        self.orphans: list[tuple[str, str]] = []
        for alarm in active:
            key = f"{alarm.device}/{alarm.point}"
            self.book.restore(alarm)
            rule = self.rules.get(alarm.rule)
            if rule is None and is_external(alarm.rule):
                continue  # an equipment alarm: the service that raised it clears it
            if rule is None or key not in rule.alarm_points:
                self.orphans.append((alarm.rule, key))  # cleared at the first poll
                continue
            rule.restore_alarm(key, alarm.severity, alarm.side)
        # After the restores: an alarm restored as offline keeps its screen quiet.
        self.offline = OfflineSchedule(s for screens in self.screens.values() for s in screens)

    # --- the daemon's entry points -------------------------------------------------------

    def evaluate(self, readings: Sequence[Reading]) -> Evaluation:
        try:
            return self._evaluate(readings)
        except Exception:  # a bug here must not stop the poll from being stored
            log.exception("engine_failed", readings=len(readings))
            return Evaluation(tuple(readings), [])

    def acknowledge(self, alarm_id: str, ts_ms: int, by: str = "",
                    via: str = "") -> AlarmTransition | None:
        """The keeper's acknowledgement, or None if no such unacknowledged alarm is known
        to the platform (including one still held back by the storm limiter)."""
        if self.limiter.holds(alarm_id):
            return None
        return self.book.acknowledge(alarm_id, ts_ms, by, via)

    def drain(self) -> list[AlarmTransition]:
        """Every transition the storm limiter still holds, for storing at shutdown."""
        return self.limiter.drain()

    # --- one poll ------------------------------------------------------------------------

    def _evaluate(self, readings: Sequence[Reading]) -> Evaluation:
        now = max((r.ts_ms for r in readings), default=self.clock_ms or 0)
        self.clock_ms = max(now, self.clock_ms or now)
        ctx = Context(now, self.latest)
        out: list[Reading] = []
        transitions: list[AlarmTransition] = []
        notes: list[RuleNote] = []
        for rule_id, key in self.orphans:
            if (rule_id, key) in self.book.active:
                transitions.append(self.book.clear_orphan((rule_id, key), now))
        self.orphans.clear()

        # 1. quality screening
        fresh, keys = self._screen_poll(readings, out, transitions, notes)
        screens = self.screens
        seen = set(keys)
        for index, screen in self.offline.take_due(now):
            key = screen.point
            if key not in seen:
                self._judged(screen.id, key, now, self._safely(
                    screen.id, key, lambda s=screen: s.check_offline(now)), transitions, notes)
            self.offline.refresh(index)

        # 2. derived points and rainfall sums, in dependency order
        changed = {key: r.ts_ms for key, r in zip(keys, fresh, strict=True)}
        due = sorted({i for key in changed for i in self.readers.get(key, ())})
        while due:
            # Lowest index first is dependency order; what a producer makes can only make
            # later producers due.
            producer = self.producers[heapq.heappop(due)]
            for produced in self._produce(producer, changed, ctx):
                key = produced.key
                if key in screens:
                    produced = self._screen(produced, key, transitions, notes)
                fresh.append(self._take(produced, key, out))
                keys.append(key)
                changed[key] = max(changed.get(key, 0), produced.ts_ms)
                for i in self.readers.get(key, ()):
                    if i not in due:
                        heapq.heappush(due, i)

        # 3. rules
        by_input = self.by_input
        for key, reading in zip(keys, fresh, strict=True):
            for rule in by_input.get(key, ()):
                judgements = self._safely(rule.id, key,
                                          lambda r=rule, x=reading: r.judge(x, ctx))
                self._judged(rule.id, key, reading.ts_ms, judgements, transitions, notes)

        released = self.limiter.submit(transitions, now)
        self._say_storm(len(released))
        return Evaluation(tuple(out), released, tuple(notes), self.limiter.pending)

    def _say_storm(self, released: int) -> None:
        """Log a storm when the limiter starts holding transitions back and when it has
        let the last one go: once each, not at every poll it lasts (at 200 devices every
        0.25 s that was 800 lines a second, 19,000 in one run of a bench)."""
        pending = self.limiter.pending
        if pending and self._storm_peak == 0:
            log.warning("alarm_storm_paced", released=released, deferred=pending)
        elif not pending and self._storm_peak:
            log.info("alarm_storm_over", most_deferred=self._storm_peak)
        self._storm_peak = max(self._storm_peak, pending) if pending else 0

    def _screen_poll(self, readings: Sequence[Reading], out: list[Reading],
                     transitions: list[AlarmTransition],
                     notes: list[RuleNote]) -> tuple[list[Reading], list[str]]:
        """The poll's readings after their screens, and their keys (``keys[i]`` is
        ``fresh[i].key``, built once: at 200 devices x 10 points every 0.25 s the engine
        built each one seven times, and most points have no screen and no rule)."""
        fresh: list[Reading] = []
        keys: list[str] = []
        screens = self.screens
        for reading in readings:
            key = reading.key
            if key in screens:
                reading = self._screen(reading, key, transitions, notes)
            fresh.append(self._take(reading, key, out))
            keys.append(key)
        return fresh, keys

    def _take(self, reading: Reading, key: str, out: list[Reading]) -> Reading:
        out.append(reading)
        previous = self.latest.get(key)
        if previous is None or reading.ts_ms >= previous.ts_ms:
            self.latest[key] = reading
        return reading

    def _screen(self, reading: Reading, key: str, transitions: list[AlarmTransition],
                notes: list[RuleNote]) -> Reading:
        """The reading after the screens of its point, ``key`` (which has some)."""
        for screen in self.screens[key]:
            try:
                reading, judgements = screen.screen(reading)
            except Exception:
                log.exception("rule_failed", rule=screen.id, point=key)
                continue
            self._judged(screen.id, key, reading.ts_ms, judgements, transitions, notes)
        self.offline.refresh_point(key)
        return reading

    def _produce(self, producer: DerivedPoint | Producer, changed: dict[str, int],
                 ctx: Context) -> list[Reading]:
        if isinstance(producer, DerivedPoint):
            stamps = [changed[x] for x in producer.inputs if x in changed]
            if not stamps:
                return []
            try:
                return [producer.compute(ctx, max(stamps))]
            except Exception:
                log.exception("derived_point_failed", point=producer.key)
                return [Reading(producer.device, producer.point, max(stamps), None,
                                producer.unit, "bad", None, "evaluation_error")]
        source = ctx.latest.get(producer.source)
        if producer.source not in changed or source is None:
            return []
        try:
            return producer.produce(source, ctx)
        except Exception:
            log.exception("rule_failed", rule=producer.id, point=producer.source)
            return []

    def _safely(self, rule_id: str, key: str,
                call: Callable[[], Sequence[Judgement]]) -> Sequence[Judgement]:
        try:
            return call()
        except Exception:  # a broken rule must not stop the others or the poll
            log.exception("rule_failed", rule=rule_id, point=key)
            return []

    def _judged(self, rule_id: str, key: str, ts_ms: int, judgements: Sequence[Judgement],
                transitions: list[AlarmTransition], notes: list[RuleNote]) -> None:
        for judgement in judgements:
            point = judgement.point or key
            if isinstance(judgement, Stale):
                notes.append(RuleNote(rule_id, point, ts_ms, judgement.reason))
                if (rule_id, point) not in self.stale:
                    self.stale.add((rule_id, point))
                    log.info("rule_holding", rule=rule_id, point=point,
                             reason=judgement.reason)
                continue
            assert isinstance(judgement, Verdict)
            if (rule_id, point) in self.stale:
                self.stale.discard((rule_id, point))
                log.info("rule_resumed", rule=rule_id, point=point)
            device, point_id = point.split("/", 1)
            unit = judgement.unit if judgement.unit is not None else self.units.get(point, "")
            try:
                transitions.extend(self.book.update(rule_id, device, point_id, judgement,
                                                    ts_ms, unit))
            except Exception:
                log.exception("alarm_update_failed", rule=rule_id, point=point)
