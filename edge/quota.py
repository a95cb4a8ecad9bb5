"""The store's disk quota and retention: keep within bounds without ever dropping an alarm.

An SD card in a reservoir gateway is small and a 4G outage can last days. Past the
retention period delivered readings go; past the quota, in order and each only if the
previous did not free enough: readings already delivered, oldest first (first the
delivered message rows kept for ``resend``, whose readings history holds too); 1-of-N
thinning of the older half of unsent telemetry messages (N = 2, 4, 8, 16); finally the
oldest unsent telemetry itself. Alarms are never dropped. Every step is counted in health
and the counts survive restarts (meta ``quota.*``).

Readings live in two tables (edge/historyfold.py): the telemetry message rows, and the
per-device ``history`` chunks folded from them. Every step deletes from both; a reading is
counted once (a folded message row is a copy: its readings are counted with the chunk).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from edge.historyfold import PARTS, fold_cursor, remove_seqs

log = structlog.get_logger("edge.quota")


@dataclass
class QuotaCounters:
    """What disk-quota maintenance removed, cumulative over the store's life."""

    retention_deleted: int = 0  # readings past store.retention_days
    history_pruned: int = 0  # delivered readings removed early to make room
    thinned_readings: int = 0  # undelivered readings removed by 1-of-N thinning
    thinned_messages: int = 0  # unsent telemetry messages removed by 1-of-N thinning
    dropped_messages: int = 0  # unsent telemetry removed after thinning was not enough
    unstored_readings: int = 0  # readings that could not be stored (a full disk)
    unstored_alarms: int = 0  # alarm transitions past the in-memory hold of a full disk


# Kept on the store's file system and given up when the disk fills, so that the quota's
# deletes and checkpoints (which need space for WAL frames) can still run.
RESERVE_BYTES = 256 * 1024


class DiskReserve:
    """A file of ``RESERVE_BYTES`` beside the store: space held back for a full disk."""

    def __init__(self, path: Path, size: int = RESERVE_BYTES) -> None:
        self.path = path
        self.size = size

    def ensure(self, headroom: int = 2) -> bool:
        """Create the reserve if it is missing and the disk has ``headroom`` times its
        size free (twice by default: taking it back must not fill the disk at once)."""
        if self.path.exists():
            return True
        try:
            stat = os.statvfs(self.path.parent)
            if stat.f_bavail * stat.f_frsize < headroom * self.size:
                return False
            with self.path.open("wb") as reserve:
                reserve.write(b"\0" * self.size)
                reserve.flush()
                os.fsync(reserve.fileno())
        except OSError as exc:
            self.path.unlink(missing_ok=True)
            log.warning("store_reserve_not_made", path=str(self.path), error=str(exc))
            return False
        return True

    def release(self) -> None:
        self.path.unlink(missing_ok=True)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


class QuotaKeeper:
    """Quota maintenance on the store's writer connection (the store thread only)."""

    def __init__(self, conn: sqlite3.Connection, last_seq: Callable[[], int],
                 save_seq: Callable[[], None], path: Path,
                 fold: Callable[[], int] = lambda: 0,
                 flush_acks: Callable[[], int] = lambda: 0) -> None:
        self._conn = conn
        self._fold = fold
        # Writes the acknowledgements noted since the last commit: room is made from what
        # was delivered before anything unsent is thinned, so they must be on disk first.
        self._flush_acks = flush_acks
        self._path = path
        self._last_seq = last_seq
        self._save_seq = save_seq
        self.counters = QuotaCounters(**{
            row[0][len("quota."):]: int(row[1]) for row in conn.execute(
                "SELECT key, value FROM meta WHERE key LIKE 'quota.%'")
            if row[0][len("quota."):] in QuotaCounters.__dataclass_fields__
        })

    def used_bytes(self) -> int:
        """Bytes the store takes on disk: the file (free pages included) and its WAL."""
        return sum(_size(Path(f"{self._path}{suffix}")) for suffix in ("", "-wal"))

    def _page_bytes(self) -> int:
        """Bytes in pages that hold rows: what deleting rows can shrink the file to."""
        pages = self._conn.execute("PRAGMA page_count").fetchone()[0]
        free = self._conn.execute("PRAGMA freelist_count").fetchone()[0]
        return int((pages - free) * self._page_size())

    def _page_size(self) -> int:
        return int(self._conn.execute("PRAGMA page_size").fetchone()[0])

    def _bound_wal(self, quota_bytes: int) -> None:
        """Checkpoint often enough that the WAL stays within an eighth of the quota (at
        most SQLite's default of 1,000 pages), and truncate it back to that size."""
        limit = max(16 * self._page_size(), min(quota_bytes // 8, 1000 * self._page_size()))
        self._conn.execute(f"PRAGMA wal_autocheckpoint={limit // self._page_size()}")
        self._conn.execute(f"PRAGMA journal_size_limit={limit}")

    def _give_back_space(self) -> None:
        """Return free pages to the file system and empty the WAL: deleted rows only free
        pages inside the file, which the quota counts as the disk does."""
        if self._conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 0:
            # A store made before incremental vacuum: convert it once (a full rewrite).
            self._conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
            self._conn.execute("VACUUM")
        else:
            # executescript steps the pragma to the end; execute frees one page per call.
            self._conn.executescript("PRAGMA incremental_vacuum;")
        self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    def _delivered_seq(self) -> int:
        """Telemetry messages below this seq left the outbox: delivered (or set aside)."""
        oldest = self._conn.execute(
            "SELECT MIN(seq) FROM outbox WHERE kind='telemetry'").fetchone()[0]
        return int(oldest) if oldest is not None else self._last_seq() + 1

    def _delivered_below(self) -> int:
        """Telemetry rows below this id left the outbox: delivered (or set aside)."""
        return self._delivered_seq() * PARTS

    def _folded_below(self) -> int:
        """Message rows below this id are delivered and folded: history holds a copy."""
        return min(self._delivered_below(), fold_cursor(self._conn) + 1)

    def _legacy_top(self) -> int:
        row = self._conn.execute("SELECT value FROM meta WHERE key='legacy_top'").fetchone()
        return int(row[0]) if row is not None else 0

    def release_messages(self, before_ms: int) -> int:
        """Delete message rows every channel has, that are folded, and older than the
        resend horizon: ``resend`` can no longer send them; history keeps their readings."""
        released = 0
        while True:
            chunk = self._conn.execute(
                "SELECT id, last_ts_ms FROM telemetry WHERE id > ? AND id < ? "
                "AND device IS NULL ORDER BY id LIMIT 2000",
                (self._legacy_top(), self._folded_below())).fetchall()
            old = [row_id for row_id, last_ts in chunk if last_ts < before_ms]
            if old:
                self._delete_parts(old)
                released += len(old)
            if len(old) < len(chunk) or not chunk:
                return released

    def maintain(self, quota_bytes: int, retention_before_ms: int) -> QuotaCounters:
        """Keep the store within its quota without ever dropping an alarm.

        In order, each step only if the previous did not free enough: delivered readings
        past the retention period; readings already delivered, oldest first; 1-of-N
        thinning of the older half of unsent telemetry, per device, N = 2, 4, 8, 16;
        finally the oldest unsent telemetry itself. Every step is counted.
        """
        before = QuotaCounters(**vars(self.counters))
        self.counters.retention_deleted += self._prune_retention(retention_before_ms)
        target = int(quota_bytes * 0.9)  # leave headroom so the next polls fit
        self._bound_wal(quota_bytes)
        if self.used_bytes() > quota_bytes:
            self._make_room(target)
            self._give_back_space()
        if vars(self.counters) != vars(before):
            self._save_counters()
            log.warning("store_quota_maintenance", used_bytes=self.used_bytes(),
                        quota_bytes=quota_bytes, **vars(self.counters))
        return self.counters

    def _prune_retention(self, before_ms: int) -> int:
        # Oldest delivered rows first, in chunks; each table's scan stops at the first
        # chunk that still holds readings inside the retention period (rows are in
        # acquisition order), so maintenance does not scan a large store end to end.
        total = 0
        for table, below, sql in (
                ("telemetry", self._delivered_below(),
                 "SELECT id, last_ts_ms FROM telemetry WHERE id < ? ORDER BY id LIMIT 2000"),
                ("history", self._delivered_seq(),
                 "SELECT id, last_ts_ms FROM history WHERE seq_hi < ? ORDER BY id LIMIT 2000")):
            while True:
                chunk = self._conn.execute(sql, (below,)).fetchall()
                expired = [row_id for row_id, last_ts in chunk if last_ts < before_ms]
                if expired:
                    total += self._delete_parts(expired, table)
                if len(expired) < len(chunk) or not chunk:
                    break
        return total

    def _delete_parts(self, ids: list[int], table: str = "telemetry") -> int:
        """Delete telemetry or history rows; returns how many readings they held (a
        folded message row holds copies of what history holds: it counts none)."""
        copies = fold_cursor(self._conn) if table == "telemetry" else None
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            readings = 0
            for chunk in range(0, len(ids), 500):
                batch = ids[chunk:chunk + 500]
                marks = ",".join("?" * len(batch))
                if copies is None:
                    sql, params = f"SELECT SUM(n) FROM history WHERE id IN ({marks})", batch
                else:
                    sql = (f"SELECT SUM(n) FROM telemetry WHERE id IN ({marks}) "
                           "AND (device IS NOT NULL OR id > ?)")
                    params = [*batch, copies]
                readings += self._conn.execute(sql, params).fetchone()[0] or 0
                self._conn.execute(f"DELETE FROM {table} WHERE id IN ({marks})", batch)
            # The rows may carry the newest seqs: the counter goes to meta with their
            # delete (not at every maintenance, a fsync of its own in the steady state).
            self._save_seq()
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        return int(readings)

    def _make_room(self, target: int) -> None:
        self._flush_acks()
        # Fold first: what is delivered is then in history, and its message rows (kept
        # only for resend) are the first to go, costing no reading.
        self._fold()
        for sql, below, table in (
                ("SELECT id FROM telemetry WHERE id > ? AND id < ? AND device IS NULL "
                 "ORDER BY id LIMIT 500", (self._legacy_top(), self._folded_below()),
                 "telemetry"),
                ("SELECT id FROM telemetry WHERE id < ? ORDER BY id LIMIT 500",
                 (self._delivered_below(),), "telemetry"),
                ("SELECT id FROM history WHERE seq_hi < ? ORDER BY id LIMIT 500",
                 (self._delivered_seq(),), "history")):
            while self._page_bytes() > target:
                ids = [r[0] for r in self._conn.execute(sql, below)]
                if not ids:
                    break
                self.counters.history_pruned += self._delete_parts(ids, table)
        for factor in (2, 4, 8, 16):
            if self._page_bytes() <= target:
                return
            self._thin_unsent(factor)
        while self._page_bytes() > target:
            seqs = [r[0] for r in self._conn.execute(
                "SELECT seq FROM outbox WHERE kind='telemetry' ORDER BY seq LIMIT 500")]
            if not seqs:
                return  # only alarms are left: they are never dropped
            self.counters.dropped_messages += len(seqs)
            self._drop_unsent(seqs)

    def _thin_unsent(self, factor: int) -> None:
        """Drop all but every ``factor``-th unsent message in the older half (a message
        carries a window's polls of every device, so each device keeps 1 of N polls)."""
        count = self._conn.execute(
            "SELECT COUNT(*) FROM outbox WHERE kind='telemetry'").fetchone()[0]
        if count < 2:
            return
        cutoff = self._conn.execute(
            "SELECT seq FROM outbox WHERE kind='telemetry' ORDER BY seq LIMIT 1 OFFSET ?",
            (count // 2,)).fetchone()[0]
        seqs = [r[0] for r in self._conn.execute(
            "SELECT seq FROM (SELECT seq, ROW_NUMBER() OVER (ORDER BY seq)"
            " AS n FROM outbox WHERE kind='telemetry' AND seq < ?) WHERE n % ? != 0",
            (cutoff, factor))]
        self.counters.thinned_messages += len(seqs)
        self.counters.thinned_readings += self._drop_unsent(seqs)

    def _drop_unsent(self, seqs: list[int]) -> int:
        """Remove unsent telemetry messages and their readings, from the message rows and
        the history chunks they were folded into; returns the readings."""
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
                remove_seqs(self._conn, batch)
                self._save_seq()
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
