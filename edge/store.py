"""The local SQLite store: readings, alarm state, the outbox and the message sequence.

One poll cycle is one transaction: its readings, the telemetry message that carries them
and every alarm transition they caused are committed together, each message with its
``seq``, before anything is published. A crash or power cut therefore loses either a
whole cycle that was never acknowledged to anyone, or nothing.

Readings are stored once, as the message that carries them: one ``telemetry`` row per
message and device, its readings as compressed JSON array items (``readings_fragment``).
The outbox row of a telemetry message only points at it. A poll of 100 points thus
appends about one page instead of a hundred rows and a hundred index entries scattered
over the per-point index, which is what wears an SD card (bench/disk_bytes.py); history
for the rules and the local tools is read back per device and time range.

The class is synchronous and not thread-safe on purpose: the daemon gives it one
dedicated thread (see ``StoreWorker``) so SQLite never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sqlite3
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import structlog

from edge.payloads import (
    alarm_payload,
    point_readings_in_fragment,
    readings_fragment,
    readings_from_fragment,
    telemetry_message,
)
from vocab.model import AlarmTransition, Reading, now_ms

log = structlog.get_logger("edge.store")

T = TypeVar("T")

SCHEMA_VERSION = 2

# Only alarms are indexed by kind (a partial index): telemetry, nearly every row, is found
# along the primary key, and its inserts and deletes touch no index page.
# telemetry.id is seq * PARTS + part (one part per device in the message): the rowid
# itself orders and groups a message's parts, which saves an index page per commit.
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS telemetry (
    id INTEGER PRIMARY KEY, device TEXT, ts_ms INTEGER, last_ts_ms INTEGER, n INTEGER,
    body BLOB);
CREATE INDEX IF NOT EXISTS idx_telemetry_device_last_ts ON telemetry (device, last_ts_ms);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY, kind TEXT, created_ms INTEGER, payload TEXT, device TEXT);
DROP INDEX IF EXISTS idx_outbox_kind_seq;
CREATE INDEX IF NOT EXISTS idx_outbox_alarms ON outbox (seq) WHERE kind = 'alarm';
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

PARTS = 256
# A message's readings span at most this long (a GNSS averaging interval is minutes):
# bounds the index range a history query scans.
MAX_PART_SPAN_MS = 86_400_000
COMPRESSION_LEVEL = 6


def pack_fragment(fragment: str) -> bytes:
    return zlib.compress(fragment.encode("utf-8"), COMPRESSION_LEVEL)


def unpack_fragment(body: bytes) -> str:
    return zlib.decompress(body).decode("utf-8")


def last_stored_seq(conn: sqlite3.Connection) -> int:
    """The last seq given out: never reused, or the platform would drop new messages.

    meta holds it as of the last maintenance or shutdown; rows committed since carry
    theirs, so commits need not rewrite a meta page each time.
    """
    queries = (
        ("SELECT value FROM meta WHERE key='seq'", ()),
        ("SELECT MAX(id) / ? FROM telemetry WHERE id >= 0", (PARTS,)),
        ("SELECT MAX(seq) FROM outbox", ()),
        ("SELECT MAX(seq) FROM outbox_set_aside", ()),
        ("SELECT MAX(seq) FROM alarm_events", ()),
    )
    found = [conn.execute(sql, params).fetchone() for sql, params in queries]
    return max((int(row[0]) for row in found if row is not None and row[0] is not None),
               default=0)


def _upper(to_ms: int) -> int:
    return min(to_ms + MAX_PART_SPAN_MS, 2**63 - 1)


def read_point_history(conn: sqlite3.Connection, device: str, point: str, from_ms: int,
                       to_ms: int, limit: int) -> list[Reading]:
    """One point's stored readings between two times, oldest first."""
    found: list[Reading] = []
    for (body,) in conn.execute(
            "SELECT body FROM telemetry WHERE device=? AND last_ts_ms>=? AND last_ts_ms<=?"
            " AND ts_ms<=? ORDER BY last_ts_ms, id",
            (device, from_ms, _upper(to_ms), to_ms)):
        found.extend(r for r in point_readings_in_fragment(unpack_fragment(body), point)
                     if from_ms <= r.ts_ms <= to_ms)
        if len(found) >= limit * 2:
            break
    found.sort(key=lambda r: r.ts_ms)
    return found[:limit]


def iter_stored_readings(conn: sqlite3.Connection, from_ms: int, to_ms: int,
                         device: str | None = None) -> Iterator[Reading]:
    """Every stored reading between two times, in the order the messages were stored."""
    if device is None:
        rows = conn.execute(
            "SELECT body FROM telemetry WHERE last_ts_ms>=? AND ts_ms<=? ORDER BY id",
            (from_ms, to_ms))
    else:
        rows = conn.execute(
            "SELECT body FROM telemetry WHERE device=? AND last_ts_ms>=? AND last_ts_ms<=?"
            " AND ts_ms<=? ORDER BY id",
            (device, from_ms, _upper(to_ms), to_ms))
    for (body,) in rows:
        for r in readings_from_fragment(unpack_fragment(body)):
            if from_ms <= r.ts_ms <= to_ms:
                yield r


def latest_per_point(conn: sqlite3.Connection, devices: Iterable[str]) -> list[Reading]:
    """The newest stored reading of every point of the devices (from their newest messages).

    The devices come from the configuration: listing them from the store would walk its
    whole index.
    """
    latest: dict[tuple[str, str], Reading] = {}
    for device in devices:
        # A device's points may be split over recent messages (a failed read is still
        # stored, so one message usually holds them all): look at the last few.
        for (body,) in conn.execute(
                "SELECT body FROM telemetry WHERE device=? ORDER BY last_ts_ms DESC LIMIT 20",
                (device,)):
            for r in readings_from_fragment(unpack_fragment(body)):
                known = latest.get((r.device, r.point))
                if known is None or r.ts_ms > known.ts_ms:
                    latest[(r.device, r.point)] = r
    return [latest[k] for k in sorted(latest)]


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """A message waiting in the outbox for its broker acknowledgement."""

    seq: int
    kind: Literal["telemetry", "alarm"]
    created_ms: int
    payload: str


PAGE_SIZE = 1024
# Acknowledged outbox rows are deleted in the next poll's transaction rather than in one
# of their own, unless this many are waiting.
ACK_BATCH = 500



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
        # Commits touch a handful of pages at the tail of each table: a 512 KiB page
        # cache holds them, where SQLite's default 2 MiB only grows the daemon's RSS.
        self._conn.execute("PRAGMA cache_size=-512")
        # Checked after start-up (check_integrity): reading a large store end to end
        # would hold READY for as long as the SD card takes to read it.
        self.integrity = "unchecked"
        self._checker: sqlite3.Connection | None = None
        self._check_cancelled = False
        self._create_schema()
        self._seq = last_stored_seq(self._conn)
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
        columns = {r[1] for r in self._conn.execute("PRAGMA table_info(outbox)")}
        if "device" not in columns:  # stores from before quota thinning
            self._conn.execute("ALTER TABLE outbox ADD COLUMN device TEXT")
        legacy = self._conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='readings'").fetchone()
        if legacy:
            self._migrate_readings_table()

    def _migrate_readings_table(self) -> None:
        """Fold a version-1 store's one-row-per-reading table into telemetry rows.

        Runs once, in one transaction: every stored reading is kept (units were not
        stored then and stay empty), grouped by the message that carried it.
        """
        conn = self._conn
        columns = {r[1] for r in conn.execute("PRAGMA table_info(readings)")}
        seq_column = "seq" if "seq" in columns else "NULL"
        conn.execute("BEGIN IMMEDIATE")
        try:
            rows = conn.execute(
                f"SELECT {seq_column}, device, point, ts_ms, value, raw, quality, reason "
                "FROM readings ORDER BY id")
            groups: dict[tuple[int, str], list[Reading]] = {}
            orphans = 0  # readings stored before messages had seqs: negative ids, oldest
            for seq, device, point, ts_ms, value, raw, quality, reason in rows:
                if seq is None:
                    seq, orphans = -1 - orphans // 100, orphans + 1
                groups.setdefault((seq, device), []).append(
                    Reading(device, point, ts_ms, value, "", quality, raw, reason))
            parts: dict[int, int] = {}
            for (seq, device), batch in groups.items():
                part = parts.get(seq, 0)
                parts[seq] = part + 1
                row_id = seq * PARTS + part if seq >= 0 else seq * PARTS - part
                self._insert_part(row_id, device, batch)
            conn.execute("DROP TABLE readings")
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema', ?)",
                         (str(SCHEMA_VERSION),))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        log.info("store_migrated", path=str(self.path), messages=len(groups),
                 schema=SCHEMA_VERSION)

    def _save_seq(self) -> None:
        self._conn.execute(
            "INSERT INTO meta (key, value) VALUES ('seq', ?) "
            "ON CONFLICT(key) DO UPDATE SET value=excluded.value", (str(self._seq),))

    # --- writing -------------------------------------------------------------------------

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _insert_part(self, row_id: int, device: str, readings: Sequence[Reading]) -> None:
        stamps = [r.ts_ms for r in readings]
        self._conn.execute(
            "INSERT INTO telemetry (id, device, ts_ms, last_ts_ms, n, body) VALUES (?,?,?,?,?,?)",
            (row_id, device, min(stamps), max(stamps), len(readings),
             pack_fragment(readings_fragment(readings))))

    def commit_cycle(self, readings: Sequence[Reading],
                     transitions: Sequence[AlarmTransition]) -> list[int]:
        """Store readings and transitions and queue their messages, atomically.

        Returns the seqs queued. On any error the transaction is rolled back and the
        in-memory seq counter is restored, so a failed write never leaves a gap.
        """
        return self.commit_cycles([(readings, transitions)])[0]

    def commit_cycles(
        self, cycles: Sequence[tuple[Sequence[Reading], Sequence[AlarmTransition]]],
    ) -> list[list[int]]:
        """Several polls in one transaction (one WAL append and fsync for all of them),
        each still its own message with its own seq. All or nothing."""
        seq_before = self._seq
        created = now_ms()
        queued: list[list[int]] = []
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            for readings, transitions in cycles:
                queued.append(self._queue_cycle(readings, transitions, created))
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

    def _queue_cycle(self, readings: Sequence[Reading],
                     transitions: Sequence[AlarmTransition], created: int) -> list[int]:
        queued: list[int] = []
        if readings:
            seq = self._next_seq()
            by_device: dict[str, list[Reading]] = {}
            for r in readings:
                by_device.setdefault(r.device, []).append(r)
            for part, (device, batch) in enumerate(by_device.items()):
                self._insert_part(seq * PARTS + part, device, batch)
            self._conn.execute(
                "INSERT INTO outbox (seq, kind, created_ms, payload, device)"
                " VALUES (?,?,?,NULL,?)", (seq, "telemetry", created, readings[0].device))
            queued.append(seq)
        for transition in transitions:
            seq = self._next_seq()
            self._record_transition(seq, transition)
            self._conn.execute(
                "INSERT INTO outbox (seq, kind, created_ms, payload) VALUES (?,?,?,?)",
                (seq, "alarm", created, alarm_payload(seq, transition)))
            queued.append(seq)
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
        entries = self._entries(self._conn.execute(
            "SELECT seq, kind, created_ms, payload, device FROM outbox WHERE seq=?", (seq,)))
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            for entry in entries:
                self._conn.execute(
                    "INSERT OR REPLACE INTO outbox_set_aside (seq, kind, created_ms, payload,"
                    " device, set_aside_ms, reason) SELECT seq, kind, created_ms, ?, device,"
                    " ?, ? FROM outbox WHERE seq=?", (entry.payload, now_ms(), reason, seq))
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

    def _delivered_below(self) -> int:
        """Telemetry rows below this id left the outbox: delivered (or set aside)."""
        oldest = self._conn.execute(
            "SELECT MIN(seq) FROM outbox WHERE kind='telemetry'").fetchone()[0]
        return oldest * PARTS if oldest is not None else (self._seq + 1) * PARTS

    def maintain(self, quota_bytes: int, retention_before_ms: int) -> QuotaCounters:
        """Keep the store within its quota without ever dropping an alarm.

        In order, each step only if the previous did not free enough: delivered readings
        past the retention period; readings already delivered, oldest first; 1-of-N
        thinning of the older half of unsent telemetry, per device, N = 2, 4, 8, 16;
        finally the oldest unsent telemetry itself. Every step is counted.
        """
        self.flush_acks()
        # Pruning may remove the rows that carry the newest seqs: keep the counter.
        self._save_seq()
        before = QuotaCounters(**vars(self.counters))
        self.counters.retention_deleted += self._prune_retention(retention_before_ms)
        target = int(quota_bytes * 0.9)  # leave headroom so the next polls fit
        if self.used_bytes() > quota_bytes:
            self._make_room(target)
        if vars(self.counters) != vars(before):
            self._save_counters()
            log.warning("store_quota_maintenance", used_bytes=self.used_bytes(),
                        quota_bytes=quota_bytes, **vars(self.counters))
        return self.counters

    def _prune_retention(self, before_ms: int) -> int:
        # Oldest delivered messages first, in chunks; stops at the first chunk that still
        # holds readings inside the retention period (rows are in acquisition order), so
        # maintenance does not scan a large store from end to end.
        total = 0
        while True:
            chunk = self._conn.execute(
                "SELECT id, last_ts_ms FROM telemetry WHERE id < ? ORDER BY id LIMIT 2000",
                (self._delivered_below(),)).fetchall()
            expired = [row_id for row_id, last_ts in chunk if last_ts < before_ms]
            if expired:
                total += self._delete_parts(expired)
            if len(expired) < len(chunk) or not chunk:
                return total

    def _delete_parts(self, ids: list[int]) -> int:
        """Delete telemetry rows; returns how many readings they held."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            readings = 0
            for chunk in range(0, len(ids), 500):
                marks = ",".join("?" * len(ids[chunk:chunk + 500]))
                readings += self._conn.execute(
                    f"SELECT COALESCE(SUM(n), 0) FROM telemetry WHERE id IN ({marks})",
                    ids[chunk:chunk + 500]).fetchone()[0]
                self._conn.execute(f"DELETE FROM telemetry WHERE id IN ({marks})",
                                   ids[chunk:chunk + 500])
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        return int(readings)

    def _make_room(self, target: int) -> None:
        while self.used_bytes() > target:
            ids = [r[0] for r in self._conn.execute(
                "SELECT id FROM telemetry WHERE id < ? ORDER BY id LIMIT 500",
                (self._delivered_below(),))]
            if not ids:
                break
            self.counters.history_pruned += self._delete_parts(ids)
        for factor in (2, 4, 8, 16):
            if self.used_bytes() <= target:
                return
            self._thin_unsent(factor)
        while self.used_bytes() > target:
            seqs = [r[0] for r in self._conn.execute(
                "SELECT seq FROM outbox WHERE kind='telemetry' ORDER BY seq LIMIT 500")]
            if not seqs:
                return  # only alarms are left: they are never dropped
            self.counters.dropped_messages += len(seqs)
            self._drop_unsent(seqs)

    def _thin_unsent(self, factor: int) -> None:
        """Drop all but every ``factor``-th unsent message per device in the older half."""
        count = self._conn.execute(
            "SELECT COUNT(*) FROM outbox WHERE kind='telemetry'").fetchone()[0]
        if count < 2:
            return
        cutoff = self._conn.execute(
            "SELECT seq FROM outbox WHERE kind='telemetry' ORDER BY seq LIMIT 1 OFFSET ?",
            (count // 2,)).fetchone()[0]
        seqs = [r[0] for r in self._conn.execute(
            "SELECT seq FROM (SELECT seq, ROW_NUMBER() OVER (PARTITION BY device ORDER BY seq)"
            " AS n FROM outbox WHERE kind='telemetry' AND seq < ?) WHERE n % ? != 0",
            (cutoff, factor))]
        self.counters.thinned_messages += len(seqs)
        self.counters.thinned_readings += self._drop_unsent(seqs)

    def _drop_unsent(self, seqs: list[int]) -> int:
        """Remove unsent telemetry messages and their readings; returns the readings."""
        readings = 0
        for chunk in range(0, len(seqs), 500):
            batch = seqs[chunk:chunk + 500]
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                for seq in batch:
                    lo, hi = seq * PARTS, seq * PARTS + PARTS - 1
                    readings += self._conn.execute(
                        "SELECT COALESCE(SUM(n), 0) FROM telemetry WHERE id BETWEEN ? AND ?",
                        (lo, hi)).fetchone()[0]
                    self._conn.execute("DELETE FROM telemetry WHERE id BETWEEN ? AND ?",
                                       (lo, hi))
                    self._conn.execute("DELETE FROM outbox WHERE seq=?", (seq,))
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return int(readings)

    def _save_counters(self) -> None:
        self._conn.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            [(f"quota.{k}", str(v)) for k, v in vars(self.counters).items()])

    # --- reading -------------------------------------------------------------------------

    def _entries(self, rows: Iterable[sqlite3.Row]) -> list[OutboxEntry]:
        """Outbox rows as messages, telemetry put together from its stored parts."""
        rows = list(rows)
        fragments: dict[int, list[str]] = {}
        for r in rows:
            if r["payload"] is None:
                # One range per message: pending seqs may be far apart after thinning.
                fragments[r["seq"]] = [unpack_fragment(body) for (body,) in self._conn.execute(
                    "SELECT body FROM telemetry WHERE id BETWEEN ? AND ? ORDER BY id",
                    (r["seq"] * PARTS, r["seq"] * PARTS + PARTS - 1))]
        entries = []
        for r in rows:
            payload = r["payload"]
            if payload is None:
                payload = telemetry_message(r["seq"], fragments.get(r["seq"], []))
            entries.append(OutboxEntry(r["seq"], r["kind"], r["created_ms"], payload))
        return entries

    def pending(self, kind: Literal["telemetry", "alarm"], after_seq: int,
                limit: int) -> list[OutboxEntry]:
        # The kind is spelt out in the SQL: only a literal lets SQLite use the partial
        # index of alarms.
        where = "kind = 'alarm'" if kind == "alarm" else "kind = 'telemetry'"
        return self._entries(self._conn.execute(
            f"SELECT seq, kind, created_ms, payload FROM outbox WHERE {where} AND seq>? "
            "ORDER BY seq LIMIT ?", (after_seq, limit)))

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

    def requeue(self, from_seq: int, to_seq: int) -> RequeueReport:
        """Put messages of a seq range back into the outbox, as they were first sent.

        Telemetry comes from its stored parts, alarms are rebuilt from the alarm log, each
        with its original seq, so the platform can fill a gap it found (a broker may lose
        messages it acknowledged). Messages still in the outbox stay as they are; seqs
        whose readings were pruned or thinned are reported missing.
        """
        # Acknowledged rows awaiting their delete would otherwise count as still queued
        # and vanish with the next poll: the very case resend exists for.
        self.flush_acks()
        stored: dict[int, str] = {}
        for row_id, device in self._conn.execute(
                "SELECT id, device FROM telemetry WHERE id BETWEEN ? AND ? ORDER BY id",
                (max(from_seq, 0) * PARTS, to_seq * PARTS + PARTS - 1)):
            stored.setdefault(row_id // PARTS, device)
        events = self._conn.execute(
            "SELECT e.seq, e.alarm_id, e.state, e.severity, e.ts_ms, e.value, e.limit_value,"
            " e.message, a.rule, a.device, a.point, a.side FROM alarm_events e JOIN alarms a"
            " ON a.alarm_id = e.alarm_id WHERE e.seq BETWEEN ? AND ?",
            (from_seq, to_seq)).fetchall()
        queued = {r[0] for r in self._conn.execute(
            "SELECT seq FROM outbox WHERE seq BETWEEN ? AND ?", (from_seq, to_seq))}
        entries: list[tuple[int, str, str | None, str | None]] = [
            (seq, "telemetry", None, device) for seq, device in stored.items()
            if seq not in queued]
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
        found = set(stored) | {e["seq"] for e in events} | queued
        missing = [s for s in range(from_seq, min(to_seq, self._seq) + 1) if s not in found]
        return RequeueReport(len(entries), len(queued), missing)

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
    def last_seq(self) -> int:
        return self._seq

    def close(self) -> None:
        try:
            self.flush_acks()
            self._save_seq()
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
        self._conn.execute("PRAGMA cache_size=-256")  # history is read once, not cached

    def __call__(self, point_ref: str, from_ms: int, to_ms: int) -> list[Reading]:
        device, point = point_ref.split("/", 1)
        return read_point_history(self._conn, device, point, from_ms, to_ms, self.MAX_ROWS)

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
