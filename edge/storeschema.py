"""The store's tables, and the migrations of stores written by earlier versions.

Readings are stored as the message that carries them: one ``telemetry`` row per message
(a commit window's polls, every device's readings), its readings as compressed JSON array
items, and no per-device index entry. The outbox row of a telemetry message only points at
it (edge/outboxrows.py). Per-device history is written by maintenance into ``history``
chunks (edge/historyfold.py).

Schema 2 stored one ``telemetry`` row per message *and device*, each with an entry in a
``(device, last_ts_ms)`` index. Those rows stay where they are and are read through a
partial index of the rows that name a device (only they do): ``legacy rows``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from edge.historyfold import PARTS, pack_fragment
from edge.payloads import DEFAULT_MAX_MESSAGE_BYTES, readings_fragment
from vocab.model import AlarmTransition, Reading

log = structlog.get_logger("edge.store")

SCHEMA_VERSION = 3
# Every commit appends whole pages to the WAL, and a checkpoint writes them again: the
# smallest pages SQLite has write least. 1 KiB halved the bytes per poll against 4 KiB
# (bench/disk_bytes.py); 512 B takes another 10-18 % off a commit of small polls and 70 %
# off releasing delivered messages (docs/performance.md, "512-byte pages").
PAGE_SIZE = 512
# A telemetry message carries at most this many readings (a poll is never split), and
# at most ``max_bytes`` of JSON (mqtt.max_message_bytes): a window of many small polls
# must stay within the broker's packet limit, or the broker drops the connection on it
# and the message is set aside with every device's readings in it.
MAX_MESSAGE_READINGS = 1000
# '{"seq":N,"readings":[' ... ']}' with a seq of up to 19 digits, and ',"replay":true'.
MESSAGE_FRAME_BYTES = 64
# A poll of more readings than this is a message of its own: it gains little from
# sharing one, and a message a broker refuses as too large (set aside, docs/mqtt.md)
# must not take other devices' readings with it.
MAX_SHARED_POLL = 25

# A poll's readings and the alarm transitions they caused.
Cycle = tuple[Sequence[Reading], Sequence[AlarmTransition]]

# Only alarms are indexed by kind (a partial index): telemetry, nearly every row, is found
# along the primary key, and its inserts and deletes touch no index page.
# telemetry.id is seq * PARTS + part: the rowid itself orders and groups a message's
# parts (schema 2 had one per device; a message now has one, device NULL). Only legacy
# rows name a device, so only they are in the partial index: a commit touches no index.
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS telemetry (
    id INTEGER PRIMARY KEY, device TEXT, ts_ms INTEGER, last_ts_ms INTEGER, n INTEGER,
    body BLOB);
DROP INDEX IF EXISTS idx_telemetry_device_last_ts;
CREATE INDEX IF NOT EXISTS idx_telemetry_legacy ON telemetry (device, last_ts_ms)
    WHERE device IS NOT NULL;
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY, device TEXT, ts_ms INTEGER, last_ts_ms INTEGER, n INTEGER,
    seq_lo INTEGER, seq_hi INTEGER, fold INTEGER, body BLOB);
CREATE INDEX IF NOT EXISTS idx_history_device_last_ts ON history (device, last_ts_ms);
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


def start_fold_cursor(conn: sqlite3.Connection) -> None:
    """A store from before schema 3 has only legacy rows: folding starts above them."""
    for key in ("fold_cursor", "legacy_top"):  # legacy rows are all at or below it
        conn.execute(f"INSERT OR IGNORE INTO meta (key, value) VALUES ('{key}', "
                     "(SELECT COALESCE(MAX(id), 0) FROM telemetry))")
    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema', ?)",
                 (str(SCHEMA_VERSION),))


class StoreError(Exception):
    """The store could not be opened or written; the message says which file and why."""


def open_connection(path: Path, synchronous: str) -> sqlite3.Connection:
    """The store's connection, in WAL mode with the settings every commit relies on."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except (OSError, sqlite3.Error) as exc:
        raise StoreError(f"cannot open store {path}: {exc}") from exc
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout=5000")
    # Small pages: fewer bytes per commit on SD cards (PAGE_SIZE). Only
    # takes effect on a new file: an existing store keeps its page size.
    conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
    # Lets the quota give deleted pages back to the file system (a new file only;
    # an older store is converted the first time the quota has to act).
    conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
    # Some builds (Debian's) default to secure_delete=ON, which rewrites every page a
    # delete frees: acknowledged outbox rows, released messages and the quota's
    # deletes would cost their whole size again on the card. FAST only clears what
    # lies in pages being written anyway.
    conn.execute("PRAGMA secure_delete=FAST")
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if mode != "wal":
        raise StoreError(f"store {path}: cannot switch to WAL journal mode (got {mode})")
    conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
    # A commit touches a few dozen pages at the tail of each table: 128 KiB of page
    # cache (256 pages of 512 B) holds them. The cache stays as full as it once got, and
    # SQLite counts only the pages' own bytes: at 512 KiB it held 835 KB a minute into a
    # site of 200 devices x 10 points, at 128 KiB 358 KB (docs/performance.md).
    conn.execute("PRAGMA cache_size=-128")
    return conn


def insert_part(conn: sqlite3.Connection, row_id: int, device: str | None,
                readings: Sequence[Reading], fragment: str | None = None) -> None:
    """One telemetry row; ``fragment`` is ``readings_fragment(readings)`` if the caller
    has it already."""
    stamps = [r.ts_ms for r in readings]
    conn.execute(
        "INSERT INTO telemetry (id, device, ts_ms, last_ts_ms, n, body) VALUES (?,?,?,?,?,?)",
        (row_id, device, min(stamps), max(stamps), len(readings),
         pack_fragment(readings_fragment(readings) if fragment is None else fragment)))


@dataclass(slots=True)
class WindowMessage:
    """One telemetry message of a window: the polls it carries and its readings' JSON."""

    max_bytes: int
    polls: list[int] = field(default_factory=list)
    fragments: list[str] = field(default_factory=list)
    readings: int = 0
    size: int = MESSAGE_FRAME_BYTES

    def fits(self, readings: int, size: int) -> bool:
        return (self.readings + readings <= MAX_MESSAGE_READINGS
                and self.size + size + 1 <= self.max_bytes)

    def add(self, poll: int, fragment: str, readings: int, size: int) -> None:
        self.polls.append(poll)
        self.fragments.append(fragment)
        self.readings += readings
        self.size += size + 1  # and its comma

    @property
    def fragment(self) -> str:
        return ",".join(self.fragments)


def message_polls(cycles: Sequence[Cycle],
                  max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> list[WindowMessage]:
    """The telemetry messages of a window: which polls (indexes into ``cycles``) each
    carries, at most ``MAX_MESSAGE_READINGS`` readings and ``max_bytes`` of payload. A
    poll is never split: one of more than ``MAX_SHARED_POLL`` readings, or alone over
    ``max_bytes``, is a message of its own (so ``max_bytes`` 0 makes a message per
    poll)."""
    messages: list[WindowMessage] = []
    current: WindowMessage | None = None
    for i, (readings, _) in enumerate(cycles):
        if not readings:
            continue
        fragment = readings_fragment(readings)
        size = len(fragment.encode())
        if len(readings) > MAX_SHARED_POLL:
            # On its own; the next small poll starts a new message.
            messages.append(WindowMessage(max_bytes))
            messages[-1].add(i, fragment, len(readings), size)
            current = None
            continue
        if current is None or not current.fits(len(readings), size):
            current = WindowMessage(max_bytes)
            messages.append(current)
        current.add(i, fragment, len(readings), size)
    return messages


def add_missing_columns(conn: sqlite3.Connection) -> None:
    """Columns added since the first stores were written."""
    alarms = {r[1] for r in conn.execute("PRAGMA table_info(alarms)")}
    for column in ("acked_by", "acked_via"):  # who acknowledged, and how (mqtt, sms, ...)
        if column not in alarms:
            conn.execute(f"ALTER TABLE alarms ADD COLUMN {column} TEXT")
    if "acked_ms" not in alarms:
        conn.execute("ALTER TABLE alarms ADD COLUMN acked_ms INTEGER")
    events = {r[1] for r in conn.execute("PRAGMA table_info(alarm_events)")}
    if "extra" not in events:  # a transition's extra keys (who acknowledged...), as JSON
        conn.execute("ALTER TABLE alarm_events ADD COLUMN extra TEXT")


def migrate_readings_table(conn: sqlite3.Connection, path: Path) -> None:
    """Fold a version-1 store's one-row-per-reading table into telemetry rows.

    Runs once, in one transaction: every stored reading is kept (units were not
    stored then and stay empty), grouped by the message that carried it.
    """
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
            insert_part(conn, row_id, device, batch)
        conn.execute("DROP TABLE readings")
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema', ?)",
                     (str(SCHEMA_VERSION),))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    log.info("store_migrated", path=str(path), messages=len(groups),
             schema=SCHEMA_VERSION)
