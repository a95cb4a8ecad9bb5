"""The pipeline: each poll's readings through the rules into one store commit.

Bus tasks hand each device's poll result to a bounded queue; this one task takes them in
order, runs the rules over them and commits readings, telemetry and alarm transitions in
one transaction, then wakes the outbox's channels. Acquisition never waits for a channel.

Polls that complete within ``store.commit_window_ms`` of the first share one transaction
and one telemetry message (one seq, one row: every device's readings of the window, see
edge/store.py); a poll that changes an alarm never waits, it commits at once and takes the
waiting polls with it, each alarm transition its own message. Nothing is published before
it is committed. While a bus's latest poll says its round is not done (``mid_round``: more
devices of the bus's burst are due, drivers/bustask.py), the window stays open past
``commit_window_ms`` until the round is done, at most ``round_wait_ms`` from its start:
a round on a slow line (20 slaves on 9600 baud take most of a second) is one commit, not
three or four.

Failures are contained: if a window's transaction fails, each poll is committed on its
own and a failing poll's alarms without its readings; alarm transitions that cannot be
stored at all are carried to the next commit (bounded, counted past the bound). A full
disk is logged once when it fills and once when it clears, the readings it costs are
counted in health, and a reserve file is given up so that the quota's deletes and
checkpoints can still run.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable, Sequence

import structlog

from edge.hostinfo import clock_before_release
from edge.outbox import Outbox
from edge.store import StoreWorker
from rules.engine import RuleEngine
from vocab.model import CLOCK_INVALID, ActiveAlarm, AlarmTransition, PollResult, Reading, now_ms

log = structlog.get_logger("edge.pipeline")

# Polls waiting for the store when a commit ends go into the next one together; bounded
# so one transaction (and the alarms in it) is never held up long.
COMMIT_BATCH = 256
QUEUE_SIZE = 512
# Polls that complete within this window share one transaction (store.commit_window_ms;
# bench/store_bytes_per_datapoint.py and docs/performance.md for how it was chosen).
DEFAULT_COMMIT_WINDOW_MS = 250.0
# Alarm transitions kept in memory while the disk is full; past it the oldest go, counted.
MAX_HELD_TRANSITIONS = 1000
# While the disk stays full, room is made (as the quota would) at most this often.
ROOM_RETRY_S = 30.0

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
                 make_room: Callable[[int], Awaitable[None]],
                 commit_window_ms: float = DEFAULT_COMMIT_WINDOW_MS,
                 round_wait_ms: float = 0.0) -> None:
        self.store = store
        self.commit_window_s = commit_window_ms / 1000
        # How long a window may stay open for a bus's round to finish (0: not at all).
        self.round_wait_s = round_wait_ms / 1000
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
        # Polls evaluated and waiting for the window's commit; never any alarm transition.
        self._waiting: list[tuple[PollResult, Sequence[Reading], list[AlarmTransition]]] = []
        self.deferred_transitions = 0
        self.commits = 0  # transactions that stored polls or alarms
        self.disk_full = False  # out of space, until the reserve is back with room
        self._room_made_at = 0.0  # loop time room was last made for a full disk
        self.room_retry_s = ROOM_RETRY_S

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
            stopping = await self._gather_window(result)
            async with self.rules_lock:
                await self._commit_waiting()
            if stopping:
                return

    async def _gather_window(self, first: PollResult) -> bool:
        """Evaluate polls as they come for up to ``commit_window_s``, to commit them in one
        transaction as one telemetry message (one WAL append and fsync for all); longer,
        up to ``round_wait_s``, while a bus's latest poll says its round is not done. A
        poll that changes an alarm ends the window at once. True when asked to stop."""
        loop = asyncio.get_running_loop()
        opened = loop.time()
        # The first commit after start does not wait: the platform (and systemd's
        # watcher of a restart) sees the gateway's first readings a window sooner, and
        # one small extra transaction per start costs nothing.
        window = self.commit_window_s if self.commits else 0.0
        deadline = opened + window
        round_deadline = opened + (max(window, self.round_wait_s) if self.commits else 0.0)
        mid_round: dict[str, bool] = {first.bus: first.mid_round}
        urgent = await self._evaluate(first)
        while not urgent and len(self._waiting) < COMMIT_BATCH:
            if not self.queue.empty():
                result = self.queue.get_nowait()
            else:
                until = round_deadline if any(mid_round.values()) else deadline
                left = until - loop.time()
                if left <= 0:
                    break
                try:
                    async with asyncio.timeout(left):  # not wait_for: vocab/waits.py
                        result = await self.queue.get()
                except TimeoutError:
                    break
            if result is None:
                return True
            mid_round[result.bus] = result.mid_round
            urgent = await self._evaluate(result)
        return False

    async def _evaluate(self, polled: PollResult) -> bool:
        """Run the rules over one poll and add it to the window; True if it carries alarm
        transitions (which never wait for the window)."""
        assert self.engine is not None, "the engine is built before polling starts"
        async with self.rules_lock:
            evaluation = self.engine.evaluate(stamped(polled.readings))
            self.deferred_transitions = evaluation.deferred
            # Transitions of a poll whose commit failed were already applied to the alarm
            # book: they are carried to the next commit, not lost.
            transitions = [*self._uncommitted, *evaluation.transitions]
            self._uncommitted = []
            self._waiting.append((polled, evaluation.readings, transitions))
        return bool(transitions)

    async def _commit_waiting(self) -> None:
        """Commit the window's polls (the caller holds ``rules_lock``)."""
        cycles, self._waiting = self._waiting, []
        if not cycles:
            return
        stored, anything = await self.commit_polls(
            [(polled.device, readings, transitions) for polled, readings, transitions in cycles])
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

        If that fails, one poll may be what failed: the others are committed on their own
        (a message each, as the window's would have carried them), and a failing poll's
        alarms without its readings; alarms that cannot be stored at
        all are carried to the next commit. Returns, per poll, whether its readings were
        stored, and whether anything was.
        """
        if await self.commit([(readings, transitions) for _, readings, transitions in polls],
                             polls[0][0]):
            return [True] * len(polls), True
        stored: list[bool] = []
        anything = False
        for device, readings, transitions in polls:
            # On a full disk every poll would fail the same way: do not try each one.
            if not self.disk_full and await self.commit([(readings, transitions)], device):
                stored.append(True)
                anything = True
                continue
            stored.append(False)
            self.store.counters.unstored_readings += len(readings)
            if (transitions and not self.disk_full
                    and await self.commit([((), transitions)], device)):
                anything = True
            else:
                self._hold(transitions)
        return stored, anything

    def _hold(self, transitions: list[AlarmTransition]) -> None:
        """Keep alarm transitions in memory until they can be stored, at most
        ``MAX_HELD_TRANSITIONS``: past that the oldest go, counted."""
        self._uncommitted += transitions
        excess = len(self._uncommitted) - MAX_HELD_TRANSITIONS
        if excess > 0:
            del self._uncommitted[:excess]
            self.store.counters.unstored_alarms += excess

    async def commit(self, cycles: Sequence[Cycle], device: str) -> bool:
        readings = sum(len(r) for r, _ in cycles)
        for attempt in (1, 2):
            try:
                await self.store.commit(cycles)
            except sqlite3.OperationalError as exc:
                if not is_disk_full(exc):
                    log.exception("store_commit_failed", device=device, readings=readings)
                    return False
                if attempt == 1 and await self._room_for_retry(device):
                    continue
                return False
            except Exception:
                log.exception("store_commit_failed", device=device, readings=readings)
                return False
            self.commits += 1
            if self.disk_full:
                await self._maybe_leave_disk_full()
            return True
        return False

    async def _room_for_retry(self, device: str) -> bool:
        """On SQLITE_FULL (the transaction was rolled back: nothing stored is damaged):
        enter the full state, logged once, and make room as the quota would, at most once
        per ``room_retry_s``. The reserve file gives the deletes and the checkpoint space
        to run; it is made again from what they freed. True if the commit may be retried."""
        loop = asyncio.get_running_loop()
        if self.disk_full and loop.time() - self._room_made_at < self.room_retry_s:
            return False
        used = await self.store.used_bytes()
        if not self.disk_full:
            self.disk_full = True
            log.error("store_full", device=device, used_bytes=used)
        self._room_made_at = loop.time()
        await self.store.run(self.store.reserve.release)
        try:
            await self._make_room(int(used * 0.8))
        except sqlite3.Error as exc:
            log.warning("store_full_no_room_made", error=str(exc))
        await self.store.run(self.store.reserve.ensure, 1)
        return True

    async def _maybe_leave_disk_full(self) -> None:
        """The full state ends when the reserve is back with as much again free, and not
        before ``room_retry_s`` since room was last made: a store that keeps filling the
        disk by itself is logged at most twice per period, not per poll."""
        if asyncio.get_running_loop().time() - self._room_made_at < self.room_retry_s:
            return
        if not await self.store.run(self.store.reserve.ensure):
            return
        self.disk_full = False
        counters = self.store.counters
        log.info("store_full_cleared", unstored_readings=counters.unstored_readings,
                 unstored_alarms=counters.unstored_alarms)

    # --- the rules -------------------------------------------------------------------------

    async def rebuild_engine(self, build: Callable[[list[ActiveAlarm]], RuleEngine]) -> None:
        """Replace the rule engine (start, reload): active alarms resume from the store."""
        async with self.rules_lock:
            await self._commit_waiting()  # the new engine warms up from stored history
            await self.store_held_transitions()
            # Every rule's warm-up reads its point's history: folded, it is found through
            # the index instead of by decompressing each unfolded message per point.
            await self.store.fold()
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
