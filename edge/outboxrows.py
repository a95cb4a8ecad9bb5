"""The outbox's rows in the store: which channel still needs which message.

A message is committed once (edge/store.py) and may be needed by several output
channels: the district platform over MQTT, SL 651 centres, local notifications. Each
channel has a bit, kept in ``outbox_channels``; a row's ``pending`` holds the bits of the
channels that have not acknowledged it yet, and the row is deleted when the last one
does. So a channel that is away keeps only what it still needs, the others are never held
back by it, and the bookkeeping costs a column of the row the commit writes anyway (no
row or index page per channel and message, which would cost the SD card on every poll).

A store from before channels had only the MQTT uplink: its rows get the MQTT bit.

Everything here runs on the store's one thread, on the writer's connection.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from edge.history import PARTS, unpack_fragment
from edge.payloads import alarm_payload, telemetry_message
from vocab.model import AlarmTransition, now_ms

# The MQTT uplink's bit: the one channel every store had before there were several.
MQTT_BIT = 1
MAX_CHANNELS = 62
# Acknowledged rows are deleted in the next poll's transaction rather than in one of
# their own, unless this many are waiting.
ACK_BATCH = 500

# telemetry and alarm are the pipeline's; event (an acknowledgement, a notification's
# outcome) and any channel's own kinds (an SL 651 report) are queued by the channels.
Kind = str


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """A message waiting in the outbox for a channel's acknowledgement."""

    seq: int
    kind: str
    created_ms: int
    payload: str


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


def in_transaction(conn: sqlite3.Connection, work: Callable[[], None]) -> None:
    """Run ``work`` in one write transaction; roll back on any error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        work()
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


class OutboxRows:
    def __init__(self, conn: sqlite3.Connection, last_seq: Callable[[], int],
                 save_seq: Callable[[], None]) -> None:
        self._conn = conn
        self._last_seq = last_seq
        # Writes the seq counter to meta: a transaction that deletes rows may delete the
        # one holding the newest seq (an event's, say), which must never be given again.
        self._save_seq = save_seq
        # Kind -> bits of the channels that need it; until channels are registered, the
        # MQTT uplink takes everything (as every store before channels did).
        self._needs: dict[str, int] = {"telemetry": MQTT_BIT, "alarm": MQTT_BIT,
                                       "event": MQTT_BIT}
        self._acked: list[tuple[int, int]] = []  # (seq, channel bit) awaiting their delete

    @staticmethod
    def create_schema(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE IF NOT EXISTS outbox_channels (name TEXT PRIMARY KEY, "
                     "bit INTEGER UNIQUE)")
        columns = {r[1] for r in conn.execute("PRAGMA table_info(outbox)")}
        if "device" not in columns:  # stores from before quota thinning
            conn.execute("ALTER TABLE outbox ADD COLUMN device TEXT")
        if "pending" not in columns:  # stores from before channels: all the uplink's
            conn.execute("ALTER TABLE outbox ADD COLUMN pending INTEGER")
            conn.execute("UPDATE outbox SET pending=?", (MQTT_BIT,))
        aside = {r[1] for r in conn.execute("PRAGMA table_info(outbox_set_aside)")}
        if "channel" not in aside:
            conn.execute("ALTER TABLE outbox_set_aside ADD COLUMN channel TEXT")
        conn.execute("INSERT OR IGNORE INTO outbox_channels (name, bit) VALUES ('mqtt', ?)",
                     (MQTT_BIT,))

    # --- channels ------------------------------------------------------------------------

    def register_channels(self, kinds: Mapping[str, Iterable[str]]) -> dict[str, int]:
        """Give each configured channel its bit and say which kinds it takes.

        A channel no longer configured releases its bit: what only it still needed is
        deleted (its centre is gone from the site; nothing will ever take it).
        """
        known = dict(self._conn.execute("SELECT name, bit FROM outbox_channels"))
        bits: dict[str, int] = {}

        def assign() -> None:
            for name in kinds:
                if name not in known:
                    used = set(known.values()) | set(bits.values())
                    free = next(1 << i for i in range(MAX_CHANNELS) if 1 << i not in used)
                    self._conn.execute("INSERT INTO outbox_channels (name, bit) VALUES (?, ?)",
                                       (name, free))
                    known[name] = free
                bits[name] = known[name]
            for name, bit in known.items():
                if name not in kinds:
                    self._conn.execute("UPDATE outbox SET pending = pending & ~? "
                                       "WHERE pending & ?", (bit, bit))
                    self._conn.execute("DELETE FROM outbox WHERE pending = 0")
                    self._conn.execute("DELETE FROM outbox_channels WHERE name=?", (name,))
                    self._save_seq()

        in_transaction(self._conn, assign)
        self._needs = {}
        for name, channel_kinds in kinds.items():
            for kind in channel_kinds:
                self._needs[kind] = self._needs.get(kind, 0) | bits[name]
        return bits

    # --- writing (inside the store's commit transaction) ---------------------------------

    def insert(self, seq: int, kind: Kind, created_ms: int, payload: str | None,
               device: str | None = None) -> bool:
        """Queue a message for the channels that take its kind; False if none does."""
        needs = self._needs.get(kind, 0)
        if not needs:
            return False
        self._conn.execute(
            "INSERT INTO outbox (seq, kind, created_ms, payload, device, pending) "
            "VALUES (?,?,?,?,?,?)", (seq, kind, created_ms, payload, device, needs))
        return True

    def ack(self, seqs: Iterable[int], bit: int = MQTT_BIT) -> None:
        """Note messages a channel's peer acknowledged; deleted with the next poll.

        Until then they stay on disk: a crash before the delete means they are sent again
        (same seq, dropped by the platform), never lost.
        """
        self._acked.extend((seq, bit) for seq in seqs)
        if len(self._acked) >= ACK_BATCH:
            self.flush_acks()

    def take_acked(self) -> list[tuple[int, int]]:
        acked, self._acked = self._acked, []
        return acked

    def restore_acked(self, acked: list[tuple[int, int]]) -> None:
        self._acked = acked + self._acked

    def flush_acks(self) -> int:
        """Write the acknowledgements noted so far; returns the messages deleted."""
        acked = self.take_acked()
        if not acked:
            return 0
        deleted: list[int] = []

        def delete() -> None:
            deleted.append(self.delete_acked(acked))
            self._save_seq()

        try:
            in_transaction(self._conn, delete)
        except BaseException:
            self.restore_acked(acked)
            raise
        return deleted[0]

    def delete_acked(self, acked: list[tuple[int, int]]) -> int:
        """Clear the channels' bits; delete the rows no channel needs any more."""
        if not acked:
            return 0
        self._conn.executemany("UPDATE outbox SET pending = pending & ~? WHERE seq=?",
                               [(bit, seq) for seq, bit in acked])
        return self._conn.executemany("DELETE FROM outbox WHERE seq=? AND pending=0",
                                      [(seq,) for seq, _ in acked]).rowcount

    def set_aside(self, seq: int, reason: str, channel: str = "mqtt",
                  bit: int = MQTT_BIT) -> None:
        """Take a message a channel's peer will not accept out of its stream, keeping it."""
        entries = self._entries(self._conn.execute(
            "SELECT seq, kind, created_ms, payload FROM outbox WHERE seq=?", (seq,)))

        def move() -> None:
            for entry in entries:
                self._conn.execute(
                    "INSERT OR REPLACE INTO outbox_set_aside (seq, kind, created_ms, payload,"
                    " device, set_aside_ms, reason, channel) SELECT seq, kind, created_ms, ?,"
                    " device, ?, ?, ? FROM outbox WHERE seq=?",
                    (entry.payload, now_ms(), reason, channel, seq))
            self._conn.execute("UPDATE outbox SET pending = pending & ~? WHERE seq=?",
                               (bit, seq))
            self._conn.execute("DELETE FROM outbox WHERE seq=? AND pending=0", (seq,))

        in_transaction(self._conn, move)

    def set_aside_count(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM outbox_set_aside").fetchone()[0])

    # --- reading -------------------------------------------------------------------------

    def _entries(self, rows: Iterable[sqlite3.Row]) -> list[OutboxEntry]:
        """Outbox rows as messages, telemetry put together from its stored parts."""
        rows = list(rows)
        entries = []
        for r in rows:
            payload = r["payload"]
            if payload is None:
                # One range per message: pending seqs may be far apart after thinning.
                payload = telemetry_message(r["seq"], [
                    unpack_fragment(body) for (body,) in self._conn.execute(
                        "SELECT body FROM telemetry WHERE id BETWEEN ? AND ? ORDER BY id",
                        (r["seq"] * PARTS, r["seq"] * PARTS + PARTS - 1))])
            entries.append(OutboxEntry(r["seq"], r["kind"], r["created_ms"], payload))
        return entries

    def pending(self, kind: Kind, after_seq: int, limit: int,
                bit: int = MQTT_BIT) -> list[OutboxEntry]:
        # The kind is spelt out in the SQL: only a literal lets SQLite use the partial
        # index of alarms.
        params: tuple[object, ...]
        if kind in ("alarm", "telemetry"):
            where, params = f"kind = '{kind}'", (after_seq, bit, limit)
        else:
            where, params = "kind = ?", (kind, after_seq, bit, limit)
        return self._entries(self._conn.execute(
            f"SELECT seq, kind, created_ms, payload FROM outbox WHERE {where} AND seq>? "
            "AND pending & ? ORDER BY seq LIMIT ?", params))

    def last_telemetry_seq_before(self, after_seq: int, created_before_ms: int,
                                  bit: int = MQTT_BIT) -> int:
        """The highest queued telemetry seq above ``after_seq`` created before a time."""
        row = self._conn.execute(
            "SELECT MAX(seq) FROM outbox WHERE kind='telemetry' AND seq>? AND created_ms<? "
            "AND pending & ?", (after_seq, created_before_ms, bit)).fetchone()
        return int(row[0] or after_seq)

    def stats(self, bit: int | None = None) -> OutboxStats:
        """Depth, alarms and oldest message: of one channel, or of the whole outbox.

        Read only: messages acknowledged but not yet deleted (they go with the next
        poll's commit) are left out of the count instead of being deleted first. Health
        asks every interval; a transaction of its own would cost the card a fsync each
        time (docs/performance.md, "The automatic window and the fsyncs that carry no
        reading")."""
        mask = -1 if bit is None else bit
        row = self._conn.execute(
            "SELECT COUNT(*), SUM(kind='alarm'), MIN(created_ms) FROM outbox WHERE pending & ? "
            "AND seq NOT IN (SELECT value FROM json_each(?))",
            (mask, json.dumps(self._acknowledged(mask)))).fetchone()
        return OutboxStats(int(row[0]), int(row[1] or 0), row[2])

    def _acknowledged(self, mask: int) -> list[int]:
        """Seqs no channel of ``mask`` needs any more once the noted acks are written."""
        if not self._acked:
            return []
        cleared: dict[int, int] = {}
        for seq, bit in self._acked:
            cleared[seq] = cleared.get(seq, 0) | bit
        rows = self._conn.execute(
            "SELECT seq, pending FROM outbox WHERE seq IN (SELECT value FROM json_each(?))",
            (json.dumps(list(cleared)),))
        return [seq for seq, pending in rows if not pending & ~cleared[seq] & mask]

    def requeue(self, from_seq: int, to_seq: int, bit: int = MQTT_BIT) -> RequeueReport:
        """Put messages of a seq range back into a channel's stream, as first sent."""
        return self.requeue_ranges([(from_seq, to_seq)], bit)

    def requeue_ranges(self, ranges: Sequence[tuple[int, int]],
                       bit: int = MQTT_BIT) -> RequeueReport:
        """Put messages of seq ranges (sorted, disjoint) back into a channel's stream.

        Telemetry comes from its stored parts, alarms are rebuilt from the alarm log, each
        with its original seq, so the platform can fill the gaps it found (a broker may
        lose messages it acknowledged). Messages still queued for the channel stay as they
        are; seqs whose readings were pruned or thinned are reported missing. All ranges
        are read, then written in one transaction.
        """
        # Acknowledged rows awaiting their delete would otherwise count as still queued
        # and vanish with the next poll: the very case resend exists for.
        self.flush_acks()
        entries: list[tuple[int, str, str | None, str | None]] = []
        queued_total = 0
        missing: list[int] = []
        for from_seq, to_seq in ranges:
            found, queued = self._rebuild(from_seq, to_seq, bit, entries)
            queued_total += len(queued)
            missing += [s for s in range(from_seq, min(to_seq, self._last_seq()) + 1)
                        if s not in found]
        created = now_ms() - 86_400_000  # old enough to be sent as replay

        def insert() -> None:
            # A row another channel still holds only gains this channel's bit.
            self._conn.executemany(
                "INSERT INTO outbox (seq, kind, created_ms, payload, device, pending) "
                "VALUES (?,?,?,?,?,?) ON CONFLICT(seq) DO UPDATE SET pending = pending | ?",
                [(seq, kind, created, payload, device, bit, bit)
                 for seq, kind, payload, device in entries])

        if entries:
            in_transaction(self._conn, insert)
        return RequeueReport(len(entries), queued_total, missing)

    def _rebuild(self, from_seq: int, to_seq: int, bit: int,
                 entries: list[tuple[int, str, str | None, str | None]]
                 ) -> tuple[set[int], set[int]]:
        """Add the range's messages not queued for the channel to ``entries``.

        Returns the seqs the store has (stored, logged or queued) and those still queued.
        """
        stored: dict[int, str] = {}
        for row_id, device in self._conn.execute(
                "SELECT id, device FROM telemetry WHERE id BETWEEN ? AND ? ORDER BY id",
                (max(from_seq, 0) * PARTS, to_seq * PARTS + PARTS - 1)):
            stored.setdefault(row_id // PARTS, device)
        events = self._conn.execute(
            "SELECT e.seq, e.alarm_id, e.state, e.severity, e.ts_ms, e.value, e.limit_value,"
            " e.message, a.rule, a.device, a.point, a.side, e.extra FROM alarm_events e"
            " JOIN alarms a"
            " ON a.alarm_id = e.alarm_id WHERE e.seq BETWEEN ? AND ?",
            (from_seq, to_seq)).fetchall()
        rows = dict(self._conn.execute(
            "SELECT seq, pending FROM outbox WHERE seq BETWEEN ? AND ?", (from_seq, to_seq)))
        queued = {seq for seq, pending in rows.items() if pending & bit}
        entries += [(seq, "telemetry", None, device) for seq, device in stored.items()
                    if seq not in queued]
        for e in events:
            if e["seq"] not in queued:
                t = AlarmTransition(e["alarm_id"], e["rule"], e["device"], e["point"],
                                    e["severity"], e["state"], e["value"], e["limit_value"],
                                    e["ts_ms"], e["message"], e["side"] or "",
                                    json.loads(e["extra"]) if e["extra"] else {})
                entries.append((e["seq"], "alarm", alarm_payload(e["seq"], t), None))
        return set(stored) | {e["seq"] for e in events} | queued, queued
