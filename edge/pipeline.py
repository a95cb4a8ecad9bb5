"""The pipeline: each poll's readings through the rules into one store commit.

Bus tasks hand each device's poll result to a bounded queue; this one task takes them in
order, runs the rules over them and commits readings, telemetry and alarm transitions in
one transaction, then wakes the outbox's channels. Acquisition never waits for a channel.

Failures are contained: polls that finished while a commit ran go into one transaction;
if that fails, each poll is committed on its own and a failing poll's alarms without its
readings; alarm transitions that cannot be stored at all are carried to the next commit,
never dropped. A full disk makes room as the quota would and tries again.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable, Sequence

import structlog

from edge.hostinfo import clock_before_release
from edge.outbox import Outbox
from edge.store import StoreWorker
from rules.engine import Evaluation, RuleEngine
from vocab.model import CLOCK_INVALID, ActiveAlarm, AlarmTransition, PollResult, Reading, now_ms

log = structlog.get_logger("edge.pipeline")

# Polls waiting for the store when a commit ends go into the next one together; bounded
# so one transaction (and the alarms in it) is never held up long.
COMMIT_BATCH = 32
QUEUE_SIZE = 256

Cycle = tuple[Sequence[Reading], Sequence[AlarmTransition]]


def is_disk_full(exc: sqlite3.OperationalError) -> bool:
    """SQLITE_FULL: the disk (ENOSPC) or the file's page limit is full."""
    return "full" in str(exc).lower()


def stamped(readings: tuple[Reading, ...]) -> tuple[Reading, ...]:
    """Readings as stored: a clock before this release's date is wrong (no RTC after a
    power cut), so the values are kept but their timestamps marked untrustworthy."""
    if not clock_before_release(now_ms()):
        return readings
    return tuple(
        Reading(r.device, r.point, r.ts_ms, r.value, r.unit,
                "bad" if r.quality == "bad" else "suspect", r.raw,
                r.reason or CLOCK_INVALID) for r in readings)


class Pipeline:
    """Queue → rules → one commit; owns the rule engine and the latest-reading cache."""

    def __init__(self, store: StoreWorker, outbox: Outbox,
                 make_room: Callable[[int], Awaitable[None]]) -> None:
        self.store = store
        self.outbox = outbox
        self._make_room = make_room
        self.queue: asyncio.Queue[PollResult | None] = asyncio.Queue(maxsize=QUEUE_SIZE)
        # The newest reading of every point, as the rules saw it: the one cache the rules,
        # the inspection, the commands and the page read. It outlives rule-engine rebuilds.
        self.latest: dict[str, Reading] = {}
        # device -> epoch ms its last stored poll began reading (its first reading's
        # time): a poll under way when an inspection was asked for does not count as
        # read after it.
        self.last_poll: dict[str, int] = {}
        self.polled = asyncio.Event()  # set whenever a poll was stored
        self.engine: RuleEngine | None = None
        # Held while a poll is evaluated and committed, and while the engine is rebuilt:
        # a rebuild must see every transition the old engine produced.
        self.rules_lock = asyncio.Lock()
        self._uncommitted: list[AlarmTransition] = []
        self.deferred_transitions = 0

    async def enqueue(self, result: PollResult) -> None:
        """The bus tasks' sink."""
        await self.queue.put(result)

    async def stop(self) -> None:
        await self.queue.put(None)

    # --- the task --------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            result = await self.queue.get()
            if result is None:
                return
            batch = [result]
            # Polls that finished while the last commit ran are committed together: one
            # WAL append and fsync for all of them, each still its own message.
            while len(batch) < COMMIT_BATCH and not self.queue.empty():
                waiting = self.queue.get_nowait()
                if waiting is None:
                    self.queue.put_nowait(None)  # stop after this batch
                    break
                batch.append(waiting)
            await self._evaluate_and_commit(batch)

    async def _evaluate_and_commit(self, batch: list[PollResult]) -> None:
        assert self.engine is not None, "the engine is built before polling starts"
        async with self.rules_lock:
            cycles: list[tuple[PollResult, Evaluation, list[AlarmTransition]]] = []
            for polled in batch:
                evaluation = self.engine.evaluate(stamped(polled.readings))
                self.deferred_transitions = evaluation.deferred
                # Transitions of a poll whose commit failed were already applied to the
                # alarm book: they are carried to the next commit, not lost.
                cycles.append((polled, evaluation, [*self._uncommitted,
                                                    *evaluation.transitions]))
                self._uncommitted = []
            stored, anything = await self.commit_polls(
                [(polled.device, ev.readings, transitions) for polled, ev, transitions in cycles])
        stamp = now_ms()
        for (polled, _, _), readings_stored in zip(cycles, stored, strict=True):
            if readings_stored:
                self.last_poll[polled.device] = min(
                    (r.ts_ms for r in polled.readings), default=stamp)
        if any(stored):
            self.polled.set()
        if anything:
            self.outbox.notify()

    # --- committing ------------------------------------------------------------------------

    async def commit_polls(
        self, polls: Sequence[tuple[str, Sequence[Reading], list[AlarmTransition]]],
    ) -> tuple[list[bool], bool]:
        """Commit (device, readings, transitions) of several polls in one transaction.

        If that fails, one poll may be what failed: the others are committed on their own,
        and a failing poll's alarms without its readings; alarms that cannot be stored at
        all are carried to the next commit. Returns, per poll, whether its readings were
        stored, and whether anything was.
        """
        if await self.commit([(readings, transitions) for _, readings, transitions in polls],
                             polls[0][0]):
            return [True] * len(polls), True
        stored: list[bool] = []
        anything = False
        for device, readings, transitions in polls:
            if await self.commit([(readings, transitions)], device):
                stored.append(True)
                anything = True
                continue
            stored.append(False)
            if transitions and await self.commit([((), transitions)], device):
                anything = True
            else:
                self._uncommitted += transitions
        return stored, anything

    async def commit(self, cycles: Sequence[Cycle], device: str) -> bool:
        readings = sum(len(r) for r, _ in cycles)
        for attempt in (1, 2):
            try:
                await self.store.commit(cycles)
                return True
            except sqlite3.OperationalError as exc:
                if attempt == 1 and is_disk_full(exc):
                    # The disk or the file is full: the transaction was rolled back, so
                    # nothing stored is damaged. Make room as the quota would, and retry.
                    used = await self.store.used_bytes()
                    log.error("store_disk_full", device=device, used_bytes=used)
                    await self._make_room(int(used * 0.8))
                    continue
                log.exception("store_commit_failed", device=device, readings=readings)
                return False
            except Exception:
                log.exception("store_commit_failed", device=device, readings=readings)
                return False
        return False

    # --- the rules -------------------------------------------------------------------------

    async def rebuild_engine(self, build: Callable[[list[ActiveAlarm]], RuleEngine]) -> None:
        """Replace the rule engine (start, reload): active alarms resume from the store."""
        async with self.rules_lock:
            await self.store_held_transitions()
            # The rules' state that matters across a rebuild (active alarms) lives in the
            # store, so a new engine resumes exactly where the old one was; windows and
            # fits warm up again from the stored history.
            self.engine = build(await self.store.active_alarms())
            self.engine.latest = self.latest

    async def store_held_transitions(self) -> None:
        """Transitions the storm limiter still holds are stored before the engine goes."""
        if self.engine is None:
            return
        held = [*self._uncommitted, *self.engine.drain()]
        self._uncommitted = []
        if held:
            if await self.commit([((), held)], "rules"):
                log.info("alarm_transitions_released", count=len(held))
            else:
                self._uncommitted = held

    async def acknowledge(self, alarm_id: str, by: str = "",
                          via: str = "mqtt") -> AlarmTransition | None:
        """Acknowledge an active alarm and store the event (who, how, when); None if there
        is no such unacknowledged alarm. Raises ``AckNotStored`` when the store refused
        it. Every way of acknowledging (MQTT, SMS reply, the page, a button) comes here."""
        assert self.engine is not None
        async with self.rules_lock:
            transition = self.engine.acknowledge(alarm_id, now_ms(), by, via)
            if transition is None:
                return None
            if not await self.commit([((), [transition])], "ack_alarm"):
                alarm = self.engine.book.find(alarm_id)
                if alarm is not None:  # not stored: it may be acknowledged again
                    alarm.acked, alarm.acked_by, alarm.acked_via = False, None, None
                raise AckNotStored(alarm_id)
        self.outbox.notify()
        return transition

    async def commit_equipment_alarm(self, transition: AlarmTransition) -> bool:
        """Raise or clear an alarm that no rule judges (a siren's relay module that does
        not answer, rules/alarms.py ``is_external``): it joins the alarm book, so it can be
        acknowledged like any other, and is stored and published as every alarm is.
        False when it changes nothing; a commit that fails is carried to the next one."""
        assert self.engine is not None
        async with self.rules_lock:
            if not self.engine.book.apply_external(transition):
                return False
            if not await self.commit([((), [transition])], transition.device):
                self._uncommitted.append(transition)
                return True
        self.outbox.notify()
        return True

    def active_alarms(self) -> list[ActiveAlarm]:
        return list(self.engine.book.active.values()) if self.engine else []

    def forget_points(self, keep: Callable[[str], bool]) -> None:
        """Drop cached readings of points a reload removed."""
        for key in [k for k in self.latest if not keep(k)]:
            del self.latest[key]


class AckNotStored(Exception):
    """An acknowledgement was taken but could not be stored; it may be given again."""
