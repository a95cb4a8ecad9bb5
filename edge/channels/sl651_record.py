"""The frames each centre was sent and when it confirmed them: ``edge sl651 frames``.

The field engineer commissioning a station compares what the gateway sent with the
centre's log. One row per report and centre, written when the report is first sent and
updated when its confirmation arrives (a few rows an hour: nothing for the SD card), kept
as long as the store keeps readings. Runs on the store's thread.
"""

from __future__ import annotations

import sqlite3

from edge.outboxrows import in_transaction

SCHEMA = ("CREATE TABLE IF NOT EXISTS sl651_frames (channel TEXT NOT NULL, seq INTEGER NOT "
          "NULL, serial INTEGER NOT NULL, function INTEGER NOT NULL, frame TEXT NOT NULL, "
          "sent_ms INTEGER NOT NULL, sends INTEGER NOT NULL DEFAULT 1, confirmed_ms INTEGER,"
          " outcome TEXT, PRIMARY KEY (channel, seq))")


def create_schema(conn: sqlite3.Connection) -> None:
    conn.execute(SCHEMA)


def sent(conn: sqlite3.Connection, channel: str, seq: int, serial: int, function: int,
         frame: bytes, sent_ms: int, keep_after_ms: int) -> None:
    def write() -> None:
        conn.execute(
            "INSERT INTO sl651_frames (channel, seq, serial, function, frame, sent_ms) "
            "VALUES (?,?,?,?,?,?) ON CONFLICT (channel, seq) DO UPDATE SET sends = sends + 1,"
            " serial = excluded.serial, frame = excluded.frame",
            (channel, seq, serial, function, frame.hex().upper(), sent_ms))
        conn.execute("DELETE FROM sl651_frames WHERE sent_ms < ?", (keep_after_ms,))

    in_transaction(conn, write)


def last_serial(conn: sqlite3.Connection, channel: str) -> int:
    """The serial of the last report first sent to the channel's centre; 0 if none is
    recorded (a new centre, or nothing sent within the store's retention)."""
    row = conn.execute("SELECT serial FROM sl651_frames WHERE channel=? "
                       "ORDER BY sent_ms DESC, seq DESC LIMIT 1", (channel,)).fetchone()
    return int(row[0]) if row is not None else 0


def outcome(conn: sqlite3.Connection, channel: str, seq: int, what: str,
            at_ms: int) -> None:
    """``confirmed`` (at the centre's confirmation) or why it was set aside."""
    confirmed = at_ms if what == "confirmed" else None
    in_transaction(conn, lambda: conn.execute(
        "UPDATE sl651_frames SET outcome=?, confirmed_ms=? WHERE channel=? AND seq=?",
        (what, confirmed, channel, seq)))


def frames(conn: sqlite3.Connection, from_ms: int, to_ms: int,
           channel: str | None = None) -> list[sqlite3.Row]:
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE name='sl651_frames'").fetchone():
        return []
    return list(conn.execute(
        "SELECT channel, seq, serial, function, frame, sent_ms, sends, confirmed_ms, outcome "
        "FROM sl651_frames WHERE sent_ms BETWEEN ? AND ? AND (? IS NULL OR channel = ?) "
        "ORDER BY sent_ms, channel", (from_ms, to_ms, channel, channel)))
