"""Reading stored readings back: for the rules, the local tools and the keeper's page.

Readings are stored as the telemetry messages that carry them (edge/store.py): one row
per commit window, every device's readings in it, found by no index. Per-device history
is folded out of them by maintenance into ``history`` chunks indexed by device and time
(edge/historyfold.py). A device's readings are therefore read from three places, in one
read transaction so a fold between two queries can neither hide nor double a reading:
the chunks (through their index) for messages up to the fold cursor, the message rows
above it (scanned, few: one fold interval's worth), and the per-device rows of stores
written before schema 3 (legacy rows, through their partial index).

All of this runs on any connection, so the rules' history reader and ``edge
status``/``export`` never touch the writer's connection. The alarm log
(``alarm_events``) and the notification log are read back here too, for the keeper's
page, on a read-only connection of its own.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from edge.historyfold import (
    PARTS,
    chunk_fragment,
    chunk_lines,
    device_fragment,
    fold_cursor,
    pack_fragment,
    split_by_device,
    unpack_fragment,
)
from edge.payloads import point_readings_in_fragment, readings_from_fragment
from vocab.model import AlarmTransition, Reading

__all__ = ["PARTS", "pack_fragment", "unpack_fragment"]

# A message's or chunk's readings span at most this long (a GNSS averaging interval is
# minutes, a fold interval at most a day): bounds the index range a history query scans.
MAX_PART_SPAN_MS = 2 * 86_400_000


def _upper(to_ms: int) -> int:
    return min(to_ms + MAX_PART_SPAN_MS, 2**63 - 1)


@contextmanager
def snapshot(conn: sqlite3.Connection) -> Iterator[None]:
    """One read transaction over several queries (WAL: the writer goes on meanwhile)."""
    if conn.in_transaction:
        yield
        return
    conn.execute("BEGIN")
    try:
        yield
    finally:
        if conn.in_transaction:
            conn.execute("COMMIT")


def _device_fragments(conn: sqlite3.Connection, device: str, from_ms: int,
                      to_ms: int) -> Iterator[str]:
    """One device's readings that may lie between two times, as fragments: legacy rows,
    folded chunks, then the messages above the fold cursor (call inside ``snapshot``)."""
    bounds = (device, from_ms, _upper(to_ms), to_ms)
    for (body,) in conn.execute(
            "SELECT body FROM telemetry WHERE device=? AND last_ts_ms>=? AND last_ts_ms<=?"
            " AND ts_ms<=? ORDER BY last_ts_ms, id", bounds):
        yield unpack_fragment(body)
    for (body,) in conn.execute(
            "SELECT body FROM history WHERE device=? AND last_ts_ms>=? AND last_ts_ms<=?"
            " AND ts_ms<=? ORDER BY last_ts_ms, id", bounds):
        yield chunk_fragment(body)
    for (body,) in conn.execute(
            "SELECT body FROM telemetry WHERE id>? AND device IS NULL AND last_ts_ms>=?"
            " AND ts_ms<=? ORDER BY id", (fold_cursor(conn), from_ms, to_ms)):
        fragment = device_fragment(unpack_fragment(body), device)
        if fragment:
            yield fragment


def read_point_history(conn: sqlite3.Connection, device: str, point: str, from_ms: int,
                       to_ms: int, limit: int) -> list[Reading]:
    """One point's stored readings between two times, oldest first."""
    found: list[Reading] = []
    with snapshot(conn):
        for fragment in _device_fragments(conn, device, from_ms, to_ms):
            found.extend(r for r in point_readings_in_fragment(fragment, point)
                         if from_ms <= r.ts_ms <= to_ms)
            if len(found) >= limit * 2:
                break
    found.sort(key=lambda r: r.ts_ms)
    return found[:limit]


def _all_fragments(conn: sqlite3.Connection, from_ms: int, to_ms: int) -> Iterator[str]:
    """Every device's readings that may lie between two times: legacy rows in the order
    stored, then each fold's chunks put back into message order, then the messages above
    the fold cursor (call inside ``snapshot``)."""
    for (body,) in conn.execute(
            "SELECT body FROM telemetry WHERE device IS NOT NULL AND last_ts_ms>=? AND ts_ms<=?"
            " ORDER BY id", (from_ms, to_ms)):
        yield unpack_fragment(body)
    fold: int | None = None
    lines: list[tuple[int, int, str]] = []
    for fold_id, body in conn.execute(
            "SELECT fold, body FROM history WHERE last_ts_ms>=? AND ts_ms<=? ORDER BY id",
            (from_ms, to_ms)):
        if fold_id != fold:
            yield from (f for _, _, f in sorted(lines))
            fold, lines = fold_id, []
        lines += [(seq, len(lines), f) for seq, f in chunk_lines(body)]
    yield from (f for _, _, f in sorted(lines))
    for (body,) in conn.execute(
            "SELECT body FROM telemetry WHERE id>? AND device IS NULL AND last_ts_ms>=?"
            " AND ts_ms<=? ORDER BY id", (fold_cursor(conn), from_ms, to_ms)):
        yield unpack_fragment(body)


def iter_stored_readings(conn: sqlite3.Connection, from_ms: int, to_ms: int,
                         device: str | None = None) -> Iterator[Reading]:
    """Every stored reading between two times, in the order the messages were stored
    (a device's readings, when one is named)."""
    with snapshot(conn):
        fragments = (_all_fragments(conn, from_ms, to_ms) if device is None
                     else _device_fragments(conn, device, from_ms, to_ms))
        for fragment in fragments:
            for r in readings_from_fragment(fragment):
                if from_ms <= r.ts_ms <= to_ms:
                    yield r


def _newest_fragments(conn: sqlite3.Connection, device: str) -> Iterator[str]:
    """A device's newest legacy rows and history chunks (call inside ``snapshot``)."""
    for (body,) in conn.execute(
            "SELECT body FROM telemetry WHERE device=? ORDER BY last_ts_ms DESC LIMIT 20",
            (device,)):
        yield unpack_fragment(body)
    for (body,) in conn.execute(
            "SELECT body FROM history WHERE device=? ORDER BY last_ts_ms DESC LIMIT 2",
            (device,)):
        yield chunk_fragment(body)


# A device's points may be split over recent messages (a failed read is still stored, so
# one message usually holds them all): the newest few messages that carry it are read.
LATEST_MESSAGES = 3


def latest_per_point(conn: sqlite3.Connection, devices: Iterable[str]) -> list[Reading]:
    """The newest stored reading of every point of the devices.

    The devices come from the configuration: listing them from the store would walk its
    whole index. Their newest chunks and legacy rows are found through the indexes; the
    messages above the fold cursor (one fold interval at most) are read newest first
    until each device was found in a few of them.
    """
    seen = dict.fromkeys(devices, 0)
    latest: dict[tuple[str, str], Reading] = {}

    def keep(fragment: str) -> None:
        for r in readings_from_fragment(fragment):
            known = latest.get((r.device, r.point))
            if known is None or r.ts_ms > known.ts_ms:
                latest[(r.device, r.point)] = r

    with snapshot(conn):
        for device in seen:
            for fragment in _newest_fragments(conn, device):
                keep(fragment)
        missing = len(seen)
        for (body,) in conn.execute(
                "SELECT body FROM telemetry WHERE id>? AND device IS NULL ORDER BY id DESC",
                (fold_cursor(conn),)):
            for device, fragment in split_by_device(unpack_fragment(body)).items():
                count = seen.get(device)
                if count is None or count >= LATEST_MESSAGES:
                    continue
                keep(fragment)
                seen[device] = count + 1
                missing -= count + 1 == LATEST_MESSAGES
            if not missing:
                break
    return [latest[k] for k in sorted(latest)]


def read_alarm_events(conn: sqlite3.Connection, from_ms: int, to_ms: int,
                      limit: int) -> list[AlarmTransition]:
    """Stored alarm transitions with from_ms <= ts_ms <= to_ms, newest first, at most limit.

    Each as it was published: its rule and point from the alarm, who acknowledged and how
    in ``extra``. The log is never pruned, so this scans it (a few hundred bytes a row):
    run it on a reader connection, never the writer's.
    """
    rows = conn.execute(
        "SELECT e.alarm_id, a.rule, a.device, a.point, e.severity, e.state, e.value,"
        " e.limit_value, e.ts_ms, e.message, a.side, e.extra FROM alarm_events e"
        " JOIN alarms a ON a.alarm_id = e.alarm_id WHERE e.ts_ms BETWEEN ? AND ?"
        " ORDER BY e.ts_ms DESC, e.seq DESC LIMIT ?", (from_ms, to_ms, limit))
    found = []
    for (alarm_id, rule, device, point, severity, state, value, limit_value, ts_ms, message,
         side, extra) in rows:
        try:
            details = json.loads(extra) if extra else {}
        except ValueError:
            details = {}
        found.append(AlarmTransition(alarm_id, rule, device, point, severity, state, value,
                                     limit_value, ts_ms, message or "", side or "",
                                     details if isinstance(details, dict) else {}))
    return found


@dataclass(frozen=True, slots=True)
class StoredNotification:
    """One row of the notification log (SMS texts, siren calls and their outcome)."""

    ts_ms: int
    channel: str
    recipient: str
    alarm_id: str | None
    status: str
    detail: str


NOTIFICATION_COLUMNS = ("ts_ms", "channel", "recipient", "alarm_id", "status", "detail")


def read_notifications(conn: sqlite3.Connection, from_ms: int, to_ms: int,
                       limit: int) -> list[StoredNotification]:
    """The notification log between two times, newest first, at most limit.

    The notification service (SMS, sirens) owns the ``notifications`` table and writes
    it; the keeper's page only reads it here. Until that service has created the table
    there is nothing to read. The columns read are ``NOTIFICATION_COLUMNS``: if the
    service's table names them otherwise, this function is where to say so.
    """
    columns = {row[1] for row in conn.execute("PRAGMA table_info(notifications)")}
    if not columns:
        return []
    missing = [c for c in NOTIFICATION_COLUMNS if c not in columns]
    if missing:
        raise sqlite3.OperationalError(
            f"table notifications lacks column(s) {', '.join(missing)}")
    rows = conn.execute(
        f"SELECT {', '.join(NOTIFICATION_COLUMNS)} FROM notifications "
        "WHERE ts_ms BETWEEN ? AND ? ORDER BY ts_ms DESC LIMIT ?", (from_ms, to_ms, limit))
    return [StoredNotification(int(ts), str(channel or ""), str(recipient or ""),
                               None if alarm_id is None else str(alarm_id), str(status or ""),
                               str(detail or ""))
            for ts, channel, recipient, alarm_id, status, detail in rows]


class HistoryReader:
    """Past readings for the rules (window warm-up, HST fits), on its own connection.

    The rules run on the event loop; a separate read-only connection lets them read while
    the store thread writes (WAL), without sharing a connection between threads.
    """

    MAX_ROWS = 200_000  # three years of hourly data is 26,280 rows per point

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        self._conn.execute("PRAGMA busy_timeout=5000")
        # History is read once a warm-up, not re-read: a small cache (128 pages of 512 B)
        # is enough for the b-tree's upper pages. The cache is kept while the connection
        # lives, as full as a warm-up once made it (the store's own, edge/storeschema.py).
        self._conn.execute("PRAGMA cache_size=-64")

    def __call__(self, point_ref: str, from_ms: int, to_ms: int) -> list[Reading]:
        device, point = point_ref.split("/", 1)
        return read_point_history(self._conn, device, point, from_ms, to_ms, self.MAX_ROWS)

    def close(self) -> None:
        self._conn.close()
