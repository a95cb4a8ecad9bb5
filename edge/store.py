"""The local SQLite store: readings, alarm state, the outbox and the message sequence.

One poll cycle is one transaction: its readings, the telemetry message that carries them
and every alarm transition they caused are committed together, each message with its
``seq``, before anything is published. A crash or power cut therefore loses either a
whole cycle that was never acknowledged to anyone, or nothing.

The class is synchronous and not thread-safe on purpose: the daemon gives it one
dedicated thread (see ``StoreWorker``) so SQLite never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import structlog

from edge.model import AlarmTransition, OutboxEntry, Reading, now_ms

log = structlog.get_logger("edge.store")

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS readings (
    id INTEGER PRIMARY KEY, ts_ms INTEGER, device TEXT, point TEXT, value REAL, raw REAL,
    quality TEXT, reason TEXT, seq INTEGER);
CREATE INDEX IF NOT EXISTS idx_readings_device_point_ts_ms ON readings (device, point, ts_ms);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY, kind TEXT, created_ms INTEGER, payload TEXT, device TEXT);
CREATE INDEX IF NOT EXISTS idx_outbox_kind_seq ON outbox (kind, seq);
CREATE TABLE IF NOT EXISTS outbox_set_aside (
    seq INTEGER PRIMARY KEY, kind TEXT, created_ms INTEGER, payload TEXT, device TEXT,
    set_aside_ms INTEGER, reason TEXT);
CREATE TABLE IF NOT EXISTS alarms (
    alarm_id TEXT PRIMARY KEY, rule TEXT, device TEXT, point TEXT, severity TEXT, state TEXT,
    acked INTEGER, raised_ms INTEGER, updated_ms INTEGER, value REAL, limit_value REAL,
    message TEXT, side TEXT);
CREATE TABLE IF NOT EXISTS alarm_events (
    seq INTEGER PRIMARY KEY, alarm_id TEXT, state TEXT, severity TEXT, ts_ms INTEGER,
    value REAL, limit_value REAL, message TEXT);
"""

PAGE_SIZE = 1024
# Acknowledged outbox rows are deleted in the next poll's transaction rather than in one
# of their own, unless this many are waiting.
ACK_BATCH = 500

TelemetryBuilder = Callable[[int, Sequence[Reading]], str]
AlarmBuilder = Callable[[int, AlarmTransition], str]


@dataclass(frozen=True, slots=True)
class ActiveAlarm:
    alarm_id: str
    rule: str
    device: str
    point: str
    severity: str
    state: str
    acked: bool
    raised_ms: int
    updated_ms: int
    value: float | None
    limit: float | None
    message: str
    side: str


@dataclass
class QuotaCounters:
    """What disk-quota maintenance removed, cumulative over the store's life."""

    retention_deleted: int = 0  # readings past store.retention_days
    history_pruned: int = 0  # delivered readings removed early to make room
    thinned_readings: int = 0  # undelivered readings removed by 1-of-N thinning
    thinned_messages: int = 0  # unsent telemetry messages removed by 1-of-N thinning
    dropped_messages: int = 0  # unsent telemetry removed after thinning was not enough


@dataclass(frozen=True, slots=True)
class RequeueReport:
    requeued: int
    already_queued: int
    missing: list[int]


@dataclass(frozen=True, slots=True)
class OutboxStats:
    depth: int
    alarms: int
    oldest_created_ms: int | None


class StoreError(Exception):
    """The store could not be opened or written; the message says which file and why."""


class Store:
    def __init__(self, path: Path, synchronous: Literal["full", "normal"] = "full") -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open store {path}: {exc}") from exc
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA busy_timeout=5000")
        # Every commit appends whole pages to the WAL; 1 KiB pages halve the bytes
        # written per poll on SD cards (bench/disk_bytes.py). Only takes effect on a new
        # file: an existing store keeps its page size.
        self._conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
        mode = self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise StoreError(f"store {path}: cannot switch to WAL journal mode (got {mode})")
        self._conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
        check = self._conn.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            # Keep running on a damaged file rather than refusing to poll: readings still
            # land in the intact pages, and the health topic carries the verdict.
            log.error("store_integrity_failed", path=str(path), detail=check)
        self.integrity = check
        self._create_schema()
        row = self._conn.execute("SELECT value FROM meta WHERE key='seq'").fetchone()
        self._seq = int(row[0]) if row else 0
        self._acked: list[int] = []
        self.counters = QuotaCounters(**{
            row[0][len("quota."):]: int(row[1]) for row in self._conn.execute(
                "SELECT key, value FROM meta WHERE key LIKE 'quota.%'")
            if row[0][len("quota."):] in QuotaCounters.__dataclass_fields__
        })

    def _create_schema(self) -> None:
        # Plain DDL: sqlite-utils would cost the daemon 22 MiB of RSS at import (see
        # docs/performance.md); it is used by the offline tools instead.
        self._conn.executescript(SCHEMA)
        # Stores created before quota thinning existed lack these columns.
        for table, column in (("outbox", "device"), ("readings", "seq")):
            columns = {r[1] for r in self._conn.execute(f"PRAGMA table_info({table})")}
            if column not in columns:
                self._conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} INTEGER")

    # --- writing -------------------------------------------------------------------------

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def commit_cycle(
        self,
        readings: Sequence[Reading],
        transitions: Sequence[AlarmTransition],
        telemetry_payload: TelemetryBuilder,
        alarm_payload: AlarmBuilder,
    ) -> list[int]:
        """Store readings and transitions and queue their messages, atomically.

        Returns the seqs queued. On any error the transaction is rolled back and the
        in-memory seq counter is restored, so a failed write never leaves a gap.
        """
        seq_before = self._seq
        created = now_ms()
        queued: list[int] = []
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            if readings:
                seq = self._next_seq()
                # The message's seq on each reading: it tells exactly which readings the
                # platform already has (their message left the outbox).
                conn.executemany(
                    "INSERT INTO readings (ts_ms, device, point, value, raw, quality, reason,"
                    " seq) VALUES (?,?,?,?,?,?,?,?)",
                    [(r.ts_ms, r.device, r.point, r.value, r.raw, r.quality, r.reason, seq)
                     for r in readings],
                )
                conn.execute(
                    "INSERT INTO outbox (seq, kind, created_ms, payload, device)"
                    " VALUES (?,?,?,?,?)",
                    (seq, "telemetry", created, telemetry_payload(seq, readings),
                     readings[0].device),
                )
                queued.append(seq)
            for transition in transitions:
                seq = self._next_seq()
                self._record_transition(seq, transition)
                conn.execute(
                    "INSERT INTO outbox (seq, kind, created_ms, payload) VALUES (?,?,?,?)",
                    (seq, "alarm", created, alarm_payload(seq, transition)),
                )
                queued.append(seq)
            if queued:
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('seq', ?) "
                    "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                    (str(self._seq),),
                )
            acked = self._acked
            self._delete_acked(acked)
            conn.execute("COMMIT")
        except BaseException:
            self._seq = seq_before
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        if acked is self._acked:
            self._acked = []
        return queued

    def _record_transition(self, seq: int, t: AlarmTransition) -> None:
        self._conn.execute(
            "INSERT INTO alarm_events (seq, alarm_id, state, severity, ts_ms, value, "
            "limit_value, message) VALUES (?,?,?,?,?,?,?,?)",
            (seq, t.alarm_id, t.state, t.severity, t.ts_ms, t.value, t.limit, t.message),
        )
        if t.state == "raised":
            self._conn.execute(
                "INSERT OR REPLACE INTO alarms (alarm_id, rule, device, point, severity, state,"
                " acked, raised_ms, updated_ms, value, limit_value, message, side)"
                " VALUES (?,?,?,?,?,?,0,?,?,?,?,?,?)",
                (t.alarm_id, t.rule, t.device, t.point, t.severity, t.state, t.ts_ms,
                 t.ts_ms, t.value, t.limit, t.message, t.side),
            )
        elif t.state == "acknowledged":
            self._conn.execute(
                "UPDATE alarms SET acked=1, updated_ms=? WHERE alarm_id=?",
                (t.ts_ms, t.alarm_id),
            )
        else:
            self._conn.execute(
                "UPDATE alarms SET state=?, severity=COALESCE(?, severity), updated_ms=?,"
                " value=?, limit_value=?, message=?, side=? WHERE alarm_id=?",
                (t.state, t.severity, t.ts_ms, t.value, t.limit, t.message, t.side,
                 t.alarm_id),
            )

    def ack_outbox(self, seqs: Iterable[int]) -> None:
        """Note messages the broker has acknowledged; they are deleted with the next poll.

        Until then they stay on disk: a crash before the delete means they are sent again
        (same seq, dropped by the platform), never lost.
        """
        self._acked.extend(seqs)
        if len(self._acked) >= ACK_BATCH:
            self.flush_acks()

    def flush_acks(self) -> int:
        if not self._acked:
            return 0
        acked, self._acked = self._acked, []
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            deleted = self._delete_acked(acked)
            self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            self._acked = acked + self._acked
            raise
        return deleted

    def _delete_acked(self, seqs: list[int]) -> int:
        if not seqs:
            return 0
        cur = self._conn.executemany("DELETE FROM outbox WHERE seq=?", [(s,) for s in seqs])
        return cur.rowcount

    def set_aside(self, seq: int, reason: str) -> None:
        """Move a message the broker will not take out of the outbox, keeping it."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            self._conn.execute(
                "INSERT OR REPLACE INTO outbox_set_aside (seq, kind, created_ms, payload, "
                "device, set_aside_ms, reason) SELECT seq, kind, created_ms, payload, device,"
                " ?, ? FROM outbox WHERE seq=?", (now_ms(), reason, seq))
            self._conn.execute("DELETE FROM outbox WHERE seq=?", (seq,))
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise

    def set_aside_count(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM outbox_set_aside").fetchone()[0])

    # --- disk quota ----------------------------------------------------------------------

    def used_bytes(self) -> int:
        """Bytes in use inside the file (deleted rows free pages that are then reused)."""
        pages = self._conn.execute("PRAGMA page_count").fetchone()[0]
        free = self._conn.execute("PRAGMA freelist_count").fetchone()[0]
        size = self._conn.execute("PRAGMA page_size").fetchone()[0]
        return int((pages - free) * size)

    def maintain(self, quota_bytes: int, retention_before_ms: int) -> QuotaCounters:
        """Keep the store within its quota without ever dropping an alarm.

        In order, each step only if the previous did not free enough: readings past the
        retention period; readings already delivered, oldest first; 1-of-N thinning of the
        older half of undelivered readings and unsent telemetry, per point and per device,
        N = 2, 4, 8, 16; finally the oldest unsent telemetry itself. Every step is counted.
        """
        self.flush_acks()
        before = QuotaCounters(**vars(self.counters))
        self.counters.retention_deleted += self._delete_chunks(
            "DELETE FROM readings WHERE id IN (SELECT id FROM readings WHERE ts_ms < ? "
            "LIMIT 5000)", (retention_before_ms,))
        target = int(quota_bytes * 0.9)  # leave headroom so the next polls fit
        if self.used_bytes() > quota_bytes:
            self._make_room(target)
        if vars(self.counters) != vars(before):
            self._save_counters()
            log.warning("store_quota_maintenance", used_bytes=self.used_bytes(),
                        quota_bytes=quota_bytes, **vars(self.counters))
        return self.counters

    def _make_room(self, target: int) -> None:
        oldest_unsent = self._conn.execute(
            "SELECT MIN(seq) FROM outbox WHERE kind='telemetry'").fetchone()[0]
        delivered_below = oldest_unsent if oldest_unsent is not None else 2**62
        while self.used_bytes() > target:
            pruned = self._delete_chunks(
                "DELETE FROM readings WHERE id IN (SELECT id FROM readings WHERE seq < ? "
                "ORDER BY id LIMIT 2000)", (delivered_below,), once=True)
            if not pruned:
                break
            self.counters.history_pruned += pruned
        for factor in (2, 4, 8, 16):
            if self.used_bytes() <= target:
                return
            self.counters.thinned_readings += self._thin(
                "readings", "id", "ts_ms", "device, point", factor)
            self.counters.thinned_messages += self._thin(
                "outbox", "seq", "seq", "device", factor, "kind='telemetry'")
        while self.used_bytes() > target:
            dropped = self._delete_chunks(
                "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox WHERE "
                "kind='telemetry' ORDER BY seq LIMIT 500)", (), once=True)
            if not dropped:
                return  # only alarms are left: they are never dropped
            self.counters.dropped_messages += dropped

    def _thin(self, table: str, key: str, order: str, group: str, factor: int,
              where: str = "1") -> int:
        """Delete all but every ``factor``-th row per group in the older half of a table."""
        count = self._conn.execute(f"SELECT COUNT(*) FROM {table} WHERE {where}").fetchone()[0]
        if count < 2:
            return 0
        cutoff = self._conn.execute(
            f"SELECT {order} FROM {table} WHERE {where} ORDER BY {order} LIMIT 1 OFFSET ?",
            (count // 2,)).fetchone()[0]
        return self._delete_chunks(
            f"DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM (SELECT {key}, "
            f"ROW_NUMBER() OVER (PARTITION BY {group} ORDER BY {order}) AS n FROM {table} "
            f"WHERE {where} AND {order} < ?) WHERE n % ? != 0)", (cutoff, factor), once=True)

    def _delete_chunks(self, sql: str, params: tuple[object, ...], once: bool = False) -> int:
        total = 0
        while True:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                deleted = self._conn.execute(sql, params).rowcount
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            total += deleted
            if once or deleted == 0:
                return total

    def _save_counters(self) -> None:
        self._conn.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            [(f"quota.{k}", str(v)) for k, v in vars(self.counters).items()])

    # --- reading -------------------------------------------------------------------------

    def pending(self, kind: str, after_seq: int, limit: int) -> list[OutboxEntry]:
        rows = self._conn.execute(
            "SELECT seq, kind, created_ms, payload FROM outbox WHERE kind=? AND seq>? "
            "ORDER BY seq LIMIT ?",
            (kind, after_seq, limit),
        ).fetchall()
        return [OutboxEntry(r["seq"], r["kind"], r["created_ms"], r["payload"]) for r in rows]

    def last_telemetry_seq_before(self, after_seq: int, created_before_ms: int) -> int:
        """The highest queued telemetry seq above ``after_seq`` created before a time."""
        row = self._conn.execute(
            "SELECT MAX(seq) FROM outbox WHERE kind='telemetry' AND seq>? AND created_ms<?",
            (after_seq, created_before_ms),
        ).fetchone()
        return int(row[0] or after_seq)

    def outbox_stats(self) -> OutboxStats:
        self.flush_acks()
        row = self._conn.execute(
            "SELECT COUNT(*), SUM(kind='alarm'), MIN(created_ms) FROM outbox"
        ).fetchone()
        return OutboxStats(int(row[0]), int(row[1] or 0), row[2])

    def active_alarms(self) -> list[ActiveAlarm]:
        rows = self._conn.execute(
            "SELECT * FROM alarms WHERE state != 'cleared' ORDER BY raised_ms"
        ).fetchall()
        return [
            ActiveAlarm(r["alarm_id"], r["rule"], r["device"], r["point"], r["severity"],
                        r["state"], bool(r["acked"]), r["raised_ms"], r["updated_ms"],
                        r["value"], r["limit_value"], r["message"], r["side"] or "")
            for r in rows
        ]

    def requeue(self, from_seq: int, to_seq: int, units: dict[str, str],
                telemetry_payload: TelemetryBuilder, alarm_payload: AlarmBuilder) -> RequeueReport:
        """Put messages of a seq range back into the outbox, rebuilt from what is stored.

        Telemetry is rebuilt from the readings that carry its seq, alarms from the alarm
        log, each with its original seq, so the platform can fill a gap it found (a broker
        may lose messages it acknowledged). Messages still in the outbox stay as they are;
        seqs whose readings were pruned or thinned are reported missing.
        """
        # Acknowledged rows awaiting their delete would otherwise count as still queued
        # and vanish with the next poll: the very case resend exists for.
        self.flush_acks()
        rows = self._conn.execute(
            "SELECT seq, ts_ms, device, point, value, raw, quality, reason FROM readings "
            "WHERE seq BETWEEN ? AND ? ORDER BY seq, id", (from_seq, to_seq)).fetchall()
        telemetry: dict[int, list[Reading]] = {}
        for r in rows:
            telemetry.setdefault(r["seq"], []).append(Reading(
                r["device"], r["point"], r["ts_ms"], r["value"],
                units.get(f"{r['device']}/{r['point']}", ""), r["quality"], r["raw"],
                r["reason"]))
        events = self._conn.execute(
            "SELECT e.seq, e.alarm_id, e.state, e.severity, e.ts_ms, e.value, e.limit_value,"
            " e.message, a.rule, a.device, a.point, a.side FROM alarm_events e JOIN alarms a"
            " ON a.alarm_id = e.alarm_id WHERE e.seq BETWEEN ? AND ?",
            (from_seq, to_seq)).fetchall()
        queued = {r[0] for r in self._conn.execute(
            "SELECT seq FROM outbox WHERE seq BETWEEN ? AND ?", (from_seq, to_seq))}
        entries: list[tuple[int, str, str, str | None]] = []
        for seq, batch in telemetry.items():
            if seq not in queued:
                entries.append((seq, "telemetry", telemetry_payload(seq, batch),
                                batch[0].device))
        for e in events:
            if e["seq"] not in queued:
                t = AlarmTransition(e["alarm_id"], e["rule"], e["device"], e["point"],
                                    e["severity"], e["state"], e["value"], e["limit_value"],
                                    e["ts_ms"], e["message"], e["side"] or "")
                entries.append((e["seq"], "alarm", alarm_payload(e["seq"], t), None))
        created = now_ms() - 86_400_000  # old enough to be sent as replay
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            self._conn.executemany(
                "INSERT OR IGNORE INTO outbox (seq, kind, created_ms, payload, device) "
                "VALUES (?,?,?,?,?)", [(seq, kind, created, payload, device)
                                       for seq, kind, payload, device in entries])
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        found = set(telemetry) | {e["seq"] for e in events} | queued
        missing = [s for s in range(from_seq, min(to_seq, self._seq) + 1) if s not in found]
        return RequeueReport(len(entries), len(queued), missing)

    def readings(self, device: str, point: str, from_ms: int, to_ms: int,
                 limit: int = 10_000) -> list[Reading]:
        rows = self._conn.execute(
            "SELECT ts_ms, value, raw, quality, reason FROM readings WHERE device=? AND point=?"
            " AND ts_ms>=? AND ts_ms<=? ORDER BY ts_ms LIMIT ?",
            (device, point, from_ms, to_ms, limit),
        ).fetchall()
        return [Reading(device, point, r["ts_ms"], r["value"], "", r["quality"], r["raw"],
                        r["reason"]) for r in rows]

    @property
    def last_seq(self) -> int:
        return self._seq

    def close(self) -> None:
        try:
            self.flush_acks()
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            log.warning("store_checkpoint_failed", error=str(exc))
        self._conn.close()


class HistoryReader:
    """Past readings for the rules (window warm-up, HST fits), on its own connection.

    The rules run on the event loop; a separate read-only connection lets them read while
    the store thread writes (WAL), without sharing a connection between threads.
    """

    MAX_ROWS = 200_000  # three years of hourly data is 26,280 rows per point

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        self._conn.execute("PRAGMA busy_timeout=5000")

    def __call__(self, point_ref: str, from_ms: int, to_ms: int) -> list[Reading]:
        device, point = point_ref.split("/", 1)
        rows = self._conn.execute(
            "SELECT ts_ms, value, raw, quality, reason FROM readings WHERE device=? AND point=?"
            " AND ts_ms>=? AND ts_ms<=? ORDER BY ts_ms LIMIT ?",
            (device, point, from_ms, to_ms, self.MAX_ROWS),
        ).fetchall()
        return [Reading(device, point, r[0], r[1], "", r[3], r[2], r[4]) for r in rows]

    def close(self) -> None:
        self._conn.close()


class StoreWorker:
    """Runs every store call on one dedicated thread, awaitable from the event loop."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="store"
        )

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self.store.close()
