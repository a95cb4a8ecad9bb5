"""The local SQLite store: readings, alarm state, the outbox and the message sequence.

One commit window is one transaction: its polls' readings as one telemetry message (one
``seq``, one ``telemetry`` row, one outbox row), every alarm transition they caused (a
message each), all committed before anything is published. A crash or power cut
therefore loses either a whole window that was never acknowledged to anyone, or nothing.

Readings are stored once at commit time, as the message that carries them: its readings
as compressed JSON array items (``readings_fragment``) in one row, with no per-device
index entry, which is what used to cost a page per device poll on the SD card
(docs/performance.md). Per-device history is folded out of the messages by maintenance
(edge/historyfold.py); message rows stay until every channel has them, they are folded,
and they are older than ``store.resend_horizon_s`` (what ``resend`` can send again).

The class is synchronous and not thread-safe on purpose: the daemon gives it one
dedicated thread (see ``StoreWorker``) so SQLite never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal, ParamSpec, TypeVar

import structlog

from edge.alarmrows import record_transition
from edge.durable import SeqReservation, current_boot_id
from edge.heap import give_back_free_memory
from edge.history import read_point_history
from edge.historyfold import PARTS, fold
from edge.outboxrows import OutboxRows, in_transaction
from edge.payloads import DEFAULT_MAX_MESSAGE_BYTES, alarm_payload
from edge.quota import DiskReserve, QuotaCounters, QuotaKeeper
from edge.storeschema import (
    SCHEMA,
    Cycle,
    WindowMessage,
    add_missing_columns,
    insert_part,
    last_stored_seq,
    message_polls,
    migrate_readings_table,
    open_connection,
    start_fold_cursor,
)
from vocab.model import ActiveAlarm, AlarmTransition, Reading, now_ms

log = structlog.get_logger("edge.store")

T = TypeVar("T")
P = ParamSpec("P")

# store.history_fold_s: what a fold costs per reading, by interval, in docs/performance.md.
DEFAULT_HISTORY_FOLD_S = 600.0
DEFAULT_RESEND_HORIZON_S = 86_400.0

class Store:
    def __init__(self, path: Path, synchronous: Literal["full", "normal"] = "full",
                 boot_id: str | None = None, history_fold_s: float = DEFAULT_HISTORY_FOLD_S,
                 resend_horizon_s: float = DEFAULT_RESEND_HORIZON_S,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        self.path = path
        self.max_message_bytes = max_message_bytes
        self.history_fold_s = history_fold_s
        self.resend_horizon_s = resend_horizon_s
        self._folded_at: float | None = None  # not 0.0: monotonic time counts from boot
        # Commits since the last maintenance: each took the acknowledgements with it.
        self._commits_since_maintenance = 0
        self._conn = open_connection(path, synchronous)
        # Checked after start-up (check_integrity): reading a large store end to end
        # would hold READY for as long as the SD card takes to read it.
        self.integrity = "unchecked"
        self._checker: sqlite3.Connection | None = None
        self._check_cancelled = False
        self._create_schema()
        # With synchronous=normal, seqs come from a range reserved durably ahead of use,
        # so a power cut can never make the store reuse a published seq (edge/durable.py).
        self.seqs = SeqReservation(self._conn, synchronous, boot_id or current_boot_id())
        self._seq = self.seqs.resume(last_stored_seq(self._conn))
        self.outbox = OutboxRows(self._conn, lambda: self._seq, self._save_seq)
        self.quota = QuotaKeeper(self._conn, lambda: self._seq, self._save_seq, path,
                                 self.fold, self.outbox.flush_acks)
        self.reserve = DiskReserve(Path(f"{path}.reserve"))
        self.reserve.ensure()

    def _create_schema(self) -> None:
        # Plain DDL: sqlite-utils would cost the daemon 22 MiB of RSS at import (see
        # docs/performance.md); it is used by the offline tools instead.
        self._conn.executescript(SCHEMA)
        OutboxRows.create_schema(self._conn)
        add_missing_columns(self._conn)
        legacy = self._conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='readings'").fetchone()
        if legacy:
            migrate_readings_table(self._conn, self.path)
        start_fold_cursor(self._conn)

    def _save_seq(self) -> None:
        self._conn.execute(
            "INSERT INTO meta (key, value) VALUES ('seq', ?) "
            "ON CONFLICT(key) DO UPDATE SET value=excluded.value", (str(self._seq),))

    # --- writing -------------------------------------------------------------------------

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def commit_cycle(self, readings: Sequence[Reading],
                     transitions: Sequence[AlarmTransition]) -> list[int]:
        """Store readings and transitions and queue their messages, atomically.

        Returns the seqs queued. On any error the transaction is rolled back and the
        in-memory seq counter is restored, so a failed write never leaves a gap.
        """
        return self.commit_cycles([(readings, transitions)])[0]

    def commit_cycles(self, cycles: Sequence[Cycle], shared: bool = True) -> list[list[int]]:
        """Several polls in one transaction (one WAL append and fsync for all of them):
        their readings as telemetry messages of at most ``max_message_bytes`` (edge/
        storeschema.py ``message_polls``; with ``shared`` false, a message per poll), each
        alarm transition its own. All or
        nothing. Returns, per poll, the seqs queued that carry it: its telemetry
        message's, then its transitions'."""
        seq_before = self._seq
        messages = message_polls(cycles, self.max_message_bytes if shared else 0)
        self.seqs.ensure(seq_before + len(messages) + sum(len(t) for _, t in cycles))
        created = now_ms()
        conn = self._conn
        acked: list[tuple[int, int]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            queued = self._queue_window(cycles, messages, created)
            # Acknowledged messages leave the outbox in this transaction: no commit of
            # their own.
            acked = self.outbox.take_acked()
            if self.outbox.delete_acked(acked) and self._seq == seq_before:
                # Nothing new to number: the deleted rows may have held the newest seq.
                self._save_seq()
            conn.execute("COMMIT")
            self._commits_since_maintenance += 1
        except BaseException:
            self._seq = seq_before
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self.outbox.restore_acked(acked)
            raise
        return queued

    def _queue_window(self, cycles: Sequence[Cycle], messages: list[WindowMessage],
                      created: int) -> list[list[int]]:
        queued: list[list[int]] = [[] for _ in cycles]
        for message in messages:
            seq = self._next_seq()
            polls = message.polls
            readings = [r for i in polls for r in cycles[i][0]]
            insert_part(self._conn, seq * PARTS, None, readings, message.fragment)
            # A message of one device names it: the quota thins such messages per device.
            devices = {r.device for r in readings}
            device = devices.pop() if len(devices) == 1 else None
            if self.outbox.insert(seq, "telemetry", created, None, device):
                for i in polls:
                    queued[i].append(seq)
        for i, (_, transitions) in enumerate(cycles):
            for transition in transitions:
                seq = self._next_seq()
                record_transition(self._conn, seq, transition)
                if self.outbox.insert(seq, "alarm", created, alarm_payload(seq, transition)):
                    queued[i].append(seq)
        return queued

    def queue_message(self, kind: str, build: Callable[[int], str]) -> int | None:
        """Commit one message of a channel's own making (an SL 651 report, a
        notification's outcome) with the next seq; ``build(seq)`` makes its payload.
        Returns its seq, or None when no configured channel takes that kind."""
        self.seqs.ensure(self._seq + 1)
        seq = self._next_seq()
        try:
            queued: list[bool] = []
            in_transaction(self._conn, lambda: queued.append(
                self.outbox.insert(seq, kind, now_ms(), build(seq))))
        except BaseException:
            self._seq -= 1
            raise
        if not queued[0]:
            self._seq -= 1
            return None
        return seq

    # --- disk quota ----------------------------------------------------------------------

    @property
    def counters(self) -> QuotaCounters:
        return self.quota.counters

    def used_bytes(self) -> int:
        return self.quota.used_bytes()

    def maintain(self, quota_bytes: int, retention_before_ms: int) -> QuotaCounters:
        """Fold history when due, release message rows past the resend horizon, and keep
        the store within its quota and retention (edge/quota.py)."""
        # Polls flowing take the acknowledgements with their commits; only a store whose
        # devices are all silent needs a transaction (and a fsync) of its own for them.
        # (The quota flushes them itself before it makes room: edge/quota.py.)
        if not self._commits_since_maintenance:
            self.outbox.flush_acks()
        self._commits_since_maintenance = 0
        if self._folded_at is None or time.monotonic() - self._folded_at >= self.history_fold_s:
            self.fold()  # on a full disk, the quota's steps run without it
        self.quota.release_messages(now_ms() - int(self.resend_horizon_s * 1000))
        return self.quota.maintain(quota_bytes, retention_before_ms)

    def fold(self) -> int:
        """Fold the messages committed since the last fold into per-device history.

        A fold copies readings: on a full disk it fails (rolled back, nothing lost; the
        readers see the messages unfolded) and is retried at the next maintenance."""
        self._folded_at = time.monotonic()
        try:
            return fold(self._conn)
        except sqlite3.OperationalError as exc:
            if "full" not in str(exc).lower():
                raise
            log.warning("history_fold_deferred", error=str(exc))
            return 0
        finally:
            # The fold's compressors (one a device) are freed now; without this the
            # daemon would keep their size in RSS after the first fold (edge/heap.py).
            give_back_free_memory()

    # --- reading -------------------------------------------------------------------------

    def active_alarms(self) -> list[ActiveAlarm]:
        rows = self._conn.execute(
            "SELECT * FROM alarms WHERE state != 'cleared' ORDER BY raised_ms"
        ).fetchall()
        return [
            ActiveAlarm(r["alarm_id"], r["rule"], r["device"], r["point"], r["severity"],
                        r["side"] or "", r["limit_value"], bool(r["acked"]), r["state"],
                        r["raised_ms"], r["updated_ms"], r["value"], r["message"],
                        r["acked_by"], r["acked_via"])
            for r in rows
        ]

    def readings(self, device: str, point: str, from_ms: int, to_ms: int,
                 limit: int = 10_000) -> list[Reading]:
        return read_point_history(self._conn, device, point, from_ms, to_ms, limit)

    def check_integrity(self) -> str:
        """PRAGMA quick_check on a read-only connection of its own, for any thread.

        A damaged file does not stop the gateway: readings still land in the intact
        pages, and the health topic carries the verdict.
        """
        if self._check_cancelled:
            return self.integrity
        self._checker = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True,
                                        check_same_thread=False)
        try:
            check = self._checker.execute("PRAGMA quick_check").fetchone()[0]
        except sqlite3.OperationalError as exc:  # interrupted by a stop
            return f"unchecked: {exc}"
        finally:
            self._checker.close()
            self._checker = None
        if check != "ok":
            log.error("store_integrity_failed", path=str(self.path), detail=check)
        self.integrity = check
        return check

    def interrupt_integrity_check(self) -> None:
        self._check_cancelled = True
        checker = self._checker
        if checker is not None:
            checker.interrupt()

    @property
    def connection(self) -> sqlite3.Connection:
        return self._conn

    @property
    def last_seq(self) -> int:
        return self._seq

    def close(self) -> None:
        try:
            self.outbox.flush_acks()
            self._save_seq()
            self.seqs.release(self._seq)
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            log.warning("store_checkpoint_failed", error=str(exc))
        self._conn.close()


class StoreWorker:
    """The store on its one thread, awaitable from the event loop.

    SQLite blocks (a commit's fsync on an SD card takes tens of milliseconds), so every
    call runs on one dedicated thread: the loop never waits for the disk and the writer's
    connection is only ever used from that thread. Components get the store through the
    typed methods here; the outbox also runs its batch selection with ``run``, so that its
    cursors and the rows it reads move together.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="store"
        )

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn`` on the store thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor,
                                          functools.partial(fn, *args, **kwargs))

    @property
    def rows(self) -> OutboxRows:
        """The outbox rows, for functions given to ``run`` (store thread only)."""
        return self._store.outbox

    @property
    def connection(self) -> sqlite3.Connection:
        """The writer's connection, for a service's own tables (edge/channels/
        notify_store.py): only in functions given to ``run``, on the store thread."""
        return self._store.connection

    @property
    def path(self) -> Path:
        return self._store.path

    @property
    def last_seq(self) -> int:
        return self._store.last_seq

    @property
    def integrity(self) -> str:
        return self._store.integrity

    @property
    def max_message_bytes(self) -> int:
        return self._store.max_message_bytes

    @max_message_bytes.setter
    def max_message_bytes(self, bound: int) -> None:
        # One int, read by the next commit on the store thread: a reload's new bound.
        self._store.max_message_bytes = bound

    @property
    def counters(self) -> QuotaCounters:
        return self._store.counters

    @property
    def reserve(self) -> DiskReserve:
        """The space held back for a full disk (call its methods through ``run``)."""
        return self._store.reserve

    async def commit(self, cycles: Sequence[Cycle]) -> list[list[int]]:
        return await self.run(self._store.commit_cycles, cycles)

    async def queue_message(self, kind: str, build: Callable[[int], str]) -> int | None:
        return await self.run(self._store.queue_message, kind, build)

    async def used_bytes(self) -> int:
        return await self.run(self._store.used_bytes)

    async def maintain(self, quota_bytes: int, retention_before_ms: int) -> QuotaCounters:
        return await self.run(self._store.maintain, quota_bytes, retention_before_ms)

    async def fold(self) -> int:
        return await self.run(self._store.fold)

    async def active_alarms(self) -> list[ActiveAlarm]:
        return await self.run(self._store.active_alarms)

    async def readings(self, device: str, point: str, from_ms: int, to_ms: int,
                       limit: int) -> list[Reading]:
        return await self.run(self._store.readings, device, point, from_ms, to_ms, limit)

    async def check_integrity(self) -> str:
        """``PRAGMA quick_check`` on a connection of its own, on a thread of its own: a
        large store takes minutes to read and must not hold up the writer."""
        return await asyncio.to_thread(self._store.check_integrity)

    def interrupt_integrity_check(self) -> None:
        self._store.interrupt_integrity_check()

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self._store.close()

