"""Notifications and escalations in the gateway's SQLite store: written before anything is
sent, so a restart neither loses an unsent text nor sends a sent one again.

Two tables of the notify service's own, beside the outbox (edge/storeschema.py style):

* ``notify_escalations``: each alarm's place on the ladder (edge/channels/escalation.py),
  its acknowledgement code, whom it told; kept as JSON with the columns the queries need;
* ``notify_messages``: every text, with whom, what, which alarms, its tries, and its
  outcome with the modem's message references; ``queued`` → ``sending`` → ``sent`` or
  ``failed`` (or ``merged`` into a summary). A row left ``sending`` by a crash is sent
  again after the restart and flagged ``interrupted``: the modem may have taken it in
  the second before the crash, and a duplicate alarm text is better than a lost one.

``notify_meta.applied_seq`` is the last alarm transition taken from the outbox, written in
the same transaction as what it caused: a transition handed over again after a crash
changes nothing twice. Every function here runs on the store's thread (``run``).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

from edge.channels.escalation import ACTIVE, Escalation, Ladder, Notice
from edge.outboxrows import in_transaction

SCHEMA = """
CREATE TABLE IF NOT EXISTS notify_escalations (
    alarm_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    code TEXT NOT NULL,
    started_ms INTEGER NOT NULL,
    next_due_ms INTEGER,
    ended_ms INTEGER,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS notify_escalations_due ON notify_escalations (next_due_ms)
    WHERE next_due_ms IS NOT NULL;
CREATE TABLE IF NOT EXISTS notify_messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_ms INTEGER NOT NULL,
    contact TEXT NOT NULL,
    phone TEXT NOT NULL,
    kind TEXT NOT NULL,
    alarm_ids TEXT NOT NULL,
    lines TEXT NOT NULL,
    asks_ack INTEGER NOT NULL DEFAULT 0,
    paced INTEGER NOT NULL DEFAULT 1,
    text TEXT NOT NULL,
    state TEXT NOT NULL,
    due_ms INTEGER NOT NULL,
    tries INTEGER NOT NULL DEFAULT 0,
    last_try_ms INTEGER,
    sent_ms INTEGER,
    refs TEXT,
    error TEXT,
    merged_into INTEGER,
    interrupted INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS notify_messages_waiting ON notify_messages (due_ms)
    WHERE state IN ('queued', 'sending');
CREATE INDEX IF NOT EXISTS notify_messages_sent ON notify_messages (phone, sent_ms)
    WHERE state = 'sent';
CREATE TABLE IF NOT EXISTS notify_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

QUEUED, SENDING, SENT, FAILED, MERGED = "queued", "sending", "sent", "failed", "merged"


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A text to queue: to whom, what it says, which alarms it is about."""

    contact: str
    phone: str
    kind: str
    alarm_ids: tuple[str, ...]
    lines: tuple[str, ...]  # each alarm in a few words, for a summary
    asks_ack: bool
    text: str
    paced: bool = True


@dataclass(frozen=True, slots=True)
class MessageRow:
    id: int
    created_ms: int
    contact: str
    phone: str
    kind: str
    alarm_ids: tuple[str, ...]
    lines: tuple[str, ...]
    asks_ack: bool
    paced: bool
    text: str
    state: str
    due_ms: int
    tries: int
    sent_ms: int | None
    refs: tuple[int, ...]
    error: str | None
    interrupted: bool


@dataclass
class Intake:
    """What taking alarm transitions in changed."""

    escalations: list[Escalation] = field(default_factory=list)
    queued: int = 0
    applied_seq: int = 0


Compose = Callable[[Escalation, Notice], NewMessage | None]
"""Turns a (contact, kind) the ladder asked for into a text (None: no such contact)."""


def create_schema(conn: sqlite3.Connection) -> None:
    conn.executescript(SCHEMA)


def has_tables(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND "
                        "name='notify_messages'").fetchone() is not None


# --- escalations ---------------------------------------------------------------------------

def _escalation(body: str) -> Escalation:
    return Escalation(**json.loads(body))


def _save(conn: sqlite3.Connection, escalation: Escalation) -> None:
    conn.execute(
        "INSERT INTO notify_escalations (alarm_id, state, code, started_ms, next_due_ms, "
        "ended_ms, body) VALUES (?,?,?,?,?,?,?) ON CONFLICT(alarm_id) DO UPDATE SET "
        "state=excluded.state, next_due_ms=excluded.next_due_ms, ended_ms=excluded.ended_ms,"
        " body=excluded.body",
        (escalation.alarm_id, escalation.state, escalation.code, escalation.started_ms,
         escalation.next_due_ms, escalation.ended_ms,
         json.dumps(asdict(escalation), ensure_ascii=False)))


def pending_escalations(conn: sqlite3.Connection) -> list[Escalation]:
    rows = conn.execute("SELECT body FROM notify_escalations WHERE state=? "
                        "ORDER BY started_ms", (ACTIVE,))
    return [_escalation(body) for (body,) in rows]


def applied_seq(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT value FROM notify_meta WHERE key='applied_seq'").fetchone()
    return int(row[0]) if row else 0


def intake(conn: sqlite3.Connection, transitions: Sequence[tuple[int, dict[str, Any]]],
           ladder: Ladder, compose: Compose, now_ms: int,
           new_code: Callable[[set[str]], str]) -> Intake:
    """Take alarm transitions (seq, alarm payload) in: escalations and the texts they
    cause, with the last seq applied, in one transaction."""
    result = Intake()

    def work() -> None:
        done = applied_seq(conn)
        result.applied_seq = done
        for seq, alarm in transitions:
            if seq <= done:
                continue  # handed over again after a crash: already applied
            row = conn.execute("SELECT body FROM notify_escalations WHERE alarm_id=?",
                               (alarm.get("id"),)).fetchone()
            before = _escalation(row[0]) if row else None
            taken = {c for (c,) in conn.execute(
                "SELECT code FROM notify_escalations WHERE state=?", (ACTIVE,))}
            escalation, notices = ladder.take(before, alarm, now_ms,
                                              partial(new_code, taken))
            result.applied_seq = max(result.applied_seq, seq)
            if escalation is None:
                continue
            _save(conn, escalation)
            result.escalations.append(escalation)
            result.queued += _queue(conn, escalation, notices, compose, now_ms)
        conn.execute("INSERT INTO notify_meta (key, value) VALUES ('applied_seq', ?) "
                     "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                     (str(result.applied_seq),))

    in_transaction(conn, work)
    return result


def advance_due(conn: sqlite3.Connection, ladder: Ladder, compose: Compose,
                now_ms: int) -> Intake:
    """Climb the ladder of every escalation whose next tier is due."""
    result = Intake()

    def work() -> None:
        rows = conn.execute("SELECT body FROM notify_escalations WHERE next_due_ms <= ? "
                            "ORDER BY next_due_ms", (now_ms,)).fetchall()
        for (body,) in rows:
            escalation = _escalation(body)
            notices = ladder.advance(escalation, now_ms)
            _save(conn, escalation)
            result.escalations.append(escalation)
            result.queued += _queue(conn, escalation, notices, compose, now_ms)

    in_transaction(conn, work)
    return result


def next_tier_ms(conn: sqlite3.Connection) -> int | None:
    row = conn.execute("SELECT MIN(next_due_ms) FROM notify_escalations").fetchone()
    return row[0]


def _queue(conn: sqlite3.Connection, escalation: Escalation, notices: Iterable[Notice],
           compose: Compose, now_ms: int) -> int:
    count = 0
    for notice in notices:
        message = compose(escalation, notice)
        if message is not None:
            insert_message(conn, message, now_ms)
            count += 1
    return count


def alarms_for_reply(conn: sqlite3.Connection, contact: str,
                     codes: Sequence[str]) -> tuple[list[str], list[str]]:
    """The pending alarms a reply acknowledges: those with its codes, or (no codes) all
    the sender was told of. Returns (alarm ids, codes that match no pending alarm)."""
    pending = pending_escalations(conn)
    if codes:
        by_code = {e.code: e.alarm_id for e in pending}
        return [by_code[c] for c in codes if c in by_code], \
            [c for c in codes if c not in by_code]
    return [e.alarm_id for e in pending if contact in e.told], []


# --- messages ------------------------------------------------------------------------------

def insert_message(conn: sqlite3.Connection, message: NewMessage, now_ms: int) -> int:
    cursor = conn.execute(
        "INSERT INTO notify_messages (created_ms, contact, phone, kind, alarm_ids, lines, "
        "asks_ack, paced, text, state, due_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        (now_ms, message.contact, message.phone, message.kind,
         json.dumps(list(message.alarm_ids), ensure_ascii=False),
         json.dumps(list(message.lines), ensure_ascii=False), int(message.asks_ack),
         int(message.paced), message.text, QUEUED, now_ms))
    return int(cursor.lastrowid or 0)


def queue_message(conn: sqlite3.Connection, message: NewMessage, now_ms: int) -> int:
    """Queue one text in a transaction of its own (a test text); returns its id."""
    ids: list[int] = []
    in_transaction(conn, lambda: ids.append(insert_message(conn, message, now_ms)))
    return ids[0]


_COLUMNS = ("id, created_ms, contact, phone, kind, alarm_ids, lines, asks_ack, paced, text, "
            "state, due_ms, tries, sent_ms, refs, error, interrupted")


def _row(r: sqlite3.Row | tuple[Any, ...]) -> MessageRow:
    return MessageRow(r[0], r[1], r[2], r[3], r[4], tuple(json.loads(r[5])),
                      tuple(json.loads(r[6])), bool(r[7]), bool(r[8]), r[9], r[10], r[11],
                      r[12], r[13], tuple(json.loads(r[14])) if r[14] else (), r[15],
                      bool(r[16]))


def message(conn: sqlite3.Connection, message_id: int) -> MessageRow | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM notify_messages WHERE id=?",
                       (message_id,)).fetchone()
    return _row(row) if row else None


def waiting(conn: sqlite3.Connection) -> list[MessageRow]:
    """Every text not yet sent or given up, oldest first."""
    rows = conn.execute(f"SELECT {_COLUMNS} FROM notify_messages WHERE state IN (?, ?) "
                        "ORDER BY id", (QUEUED, SENDING))
    return [_row(r) for r in rows]


def recover(conn: sqlite3.Connection, now_ms: int) -> int:
    """After a restart: texts left ``sending`` by a crash are queued again, flagged."""
    count: list[int] = []
    in_transaction(conn, lambda: count.append(conn.execute(
        "UPDATE notify_messages SET state=?, interrupted=1, due_ms=? WHERE state=?",
        (QUEUED, now_ms, SENDING)).rowcount))
    return count[0]


def last_sent(conn: sqlite3.Connection) -> dict[str, int]:
    """Each phone's last text sent (pacing carries over a restart)."""
    return {phone: int(ms) for phone, ms in conn.execute(
        "SELECT phone, MAX(sent_ms) FROM notify_messages WHERE state=? GROUP BY phone",
        (SENT,))}


def merge(conn: sqlite3.Connection, rows: Sequence[MessageRow], summary: NewMessage,
          now_ms: int) -> MessageRow:
    """Replace several waiting texts to one person by one summary naming every alarm."""
    made: list[int] = []

    def work() -> None:
        summary_id = insert_message(conn, summary, now_ms)
        made.append(summary_id)
        conn.executemany("UPDATE notify_messages SET state=?, merged_into=? WHERE id=?",
                         [(MERGED, summary_id, r.id) for r in rows])
        if any(r.interrupted for r in rows):
            conn.execute("UPDATE notify_messages SET interrupted=1 WHERE id=?",
                         (summary_id,))

    in_transaction(conn, work)
    row = message(conn, made[0])
    assert row is not None
    return row


def mark_sending(conn: sqlite3.Connection, message_id: int, now_ms: int) -> None:
    in_transaction(conn, lambda: conn.execute(
        "UPDATE notify_messages SET state=?, tries=tries+1, last_try_ms=? WHERE id=?",
        (SENDING, now_ms, message_id)))


def record_outcome(conn: sqlite3.Connection, message_id: int, state: str,
                   refs: Sequence[int], error: str | None, now_ms: int,
                   retry_at_ms: int | None) -> MessageRow:
    """A send's outcome: sent, queued again for ``retry_at_ms``, or failed. Called inside
    the transaction of the outbox event that publishes it (see NotifyService)."""
    conn.execute(
        "UPDATE notify_messages SET state=?, sent_ms=?, refs=?, error=?, due_ms=? WHERE id=?",
        (state, now_ms if state == SENT else None, json.dumps(list(refs)) if refs else None,
         error, retry_at_ms if retry_at_ms is not None else now_ms, message_id))
    row = message(conn, message_id)
    assert row is not None
    return row


def figures(conn: sqlite3.Connection) -> dict[str, int]:
    counts = dict(conn.execute("SELECT state, COUNT(*) FROM notify_messages GROUP BY state"))
    pending = conn.execute("SELECT COUNT(*) FROM notify_escalations WHERE state=?",
                           (ACTIVE,)).fetchone()[0]
    return {"queued": int(counts.get(QUEUED, 0)) + int(counts.get(SENDING, 0)),
            "sent": int(counts.get(SENT, 0)), "failed": int(counts.get(FAILED, 0)),
            "merged": int(counts.get(MERGED, 0)), "escalations_pending": int(pending)}


def prune(conn: sqlite3.Connection, before_ms: int) -> int:
    """Forget finished texts and escalations older than the store's retention."""
    deleted: list[int] = []

    def work() -> None:
        deleted.append(conn.execute(
            "DELETE FROM notify_messages WHERE created_ms < ? AND state IN (?, ?, ?)",
            (before_ms, SENT, FAILED, MERGED)).rowcount)
        deleted.append(conn.execute(
            "DELETE FROM notify_escalations WHERE state != ? AND ended_ms < ?",
            (ACTIVE, before_ms)).rowcount)

    in_transaction(conn, work)
    return sum(deleted)


def recent_acknowledgements(conn: sqlite3.Connection, limit: int = 5) -> list[Escalation]:
    """The last alarms acknowledged (by whom, how, when), whether cleared since or not."""
    rows = conn.execute("SELECT body FROM notify_escalations WHERE "
                        "json_extract(body, '$.acked_ms') IS NOT NULL "
                        "ORDER BY json_extract(body, '$.acked_ms') DESC LIMIT ?", (limit,))
    return [_escalation(body) for (body,) in rows]
