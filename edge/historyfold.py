"""Per-device history, written by maintenance instead of by every commit.

A commit stores a window's polls as one telemetry message: one row, no per-device index
entry (edge/store.py). Each device's newest index entry sat on a leaf page of its own, so
a commit carrying 20 devices' polls used to dirty some 20 index leaves on the SD card.
Instead, every ``store.history_fold_s`` the store thread *folds* the messages committed
since the last fold into ``history`` chunks: one row per device and fold, indexed by
``(device, last_ts_ms)``, so an index leaf is dirtied once per device per fold rather
than once per device per commit.

A chunk's body is zlib-compressed text, one line per message it took readings from:
``<seq>\\t<that device's readings as JSON array items>``, each seq after the first as
its difference from the line before (a digit or two, which compresses to almost
nothing). Keeping the seq per line lets the quota's thinning remove exactly a thinned
message's readings from history too.

The fold cursor (meta ``fold_cursor``, a telemetry row id) moves in the fold's own
transaction, together with the chunks it wrote: a crash before the commit leaves both as
they were, so a fold never loses or duplicates a reading. Readers take the chunks for
what lies at or below the cursor and the message rows above it (edge/history.py).
"""

from __future__ import annotations

import json
import sqlite3
import zlib
from collections.abc import Iterable, Iterator

import structlog

log = structlog.get_logger("edge.store")

PARTS = 256
COMPRESSION_LEVEL = 6
# A device's chunk is written when it holds this many readings (a busy device then has
# several per fold): a history query decompresses whole chunks.
MAX_CHUNK_READINGS = 20_000
# Every reading's JSON item starts so (edge/payloads.py); inside a string a quote is
# escaped, so this text marks item boundaries only.
ITEM_START = '{"device":'
_BOUNDARY = "," + ITEM_START


def pack_fragment(fragment: str) -> bytes:
    return zlib.compress(fragment.encode("utf-8"), COMPRESSION_LEVEL)


def unpack_fragment(body: bytes) -> str:
    return zlib.decompress(body).decode("utf-8")


def device_marker(device: str) -> str:
    return f"{ITEM_START}{json.dumps(device, ensure_ascii=False)},"


def split_by_device(fragment: str) -> dict[str, str]:
    """A message's readings grouped per device, each group as JSON array items (the
    items' text untouched, in their order)."""
    groups: dict[str, list[str]] = {}
    if not fragment:
        return {}
    for i, item in enumerate(fragment.split(_BOUNDARY)):
        text = item if i == 0 else ITEM_START + item
        # Device ids cannot contain quotes (config), so the id ends at the next quote.
        start = len(ITEM_START) + 1
        device = json.loads(text[start - 1:text.index('"', start) + 1])
        groups.setdefault(device, []).append(text)
    return {device: ",".join(items) for device, items in groups.items()}


def device_fragment(fragment: str, device: str) -> str:
    """Only one device's readings of a message (empty if it has none)."""
    if device_marker(device) not in fragment:
        return ""
    return split_by_device(fragment).get(device, "")


def chunk_lines(body: bytes) -> list[tuple[int, str]]:
    """A history chunk as (seq, fragment) lines."""
    lines = []
    seq = 0
    for line in unpack_fragment(body).split("\n"):
        step, fragment = line.split("\t", 1)
        seq += int(step)
        lines.append((seq, fragment))
    return lines


def chunk_fragment(body: bytes) -> str:
    """A history chunk's readings as JSON array items."""
    return ",".join(fragment for _, fragment in chunk_lines(body))


def pack_lines(lines: Iterable[tuple[int, str]]) -> bytes:
    text, last = [], 0
    for seq, fragment in lines:
        text.append(f"{seq - last}\t{fragment}")
        last = seq
    return pack_fragment("\n".join(text))


def count_items(fragment: str) -> int:
    return fragment.count(ITEM_START)


def fold_cursor(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT value FROM meta WHERE key='fold_cursor'").fetchone()
    return int(row[0]) if row is not None else 0


class _Chunk:
    """One device's history chunk as the fold builds it, compressed line by line."""

    __slots__ = ("compressor", "first", "last", "n", "parts", "seq_hi", "seq_lo")

    def __init__(self, items: int) -> None:
        # A device's readings repeat their text every ~100 characters a point: a 2 KiB
        # window finds the repeats of a device of up to ~10 points (8.2 B a reading at 1
        # point, 9.4 at 10, against 7.8 and 8.4 with zlib's 32 KiB) and holds ~18 KB of
        # compressor a device during a fold instead of ~260 KB. A logger of many points
        # (few of them on a site) needs the full window (9.8 B against 12.5 at 100).
        wbits, mem = (15, 8) if items > 10 else (11, 3)
        self.compressor = zlib.compressobj(COMPRESSION_LEVEL, zlib.DEFLATED, wbits, mem)
        self.parts: list[bytes] = []
        self.n = 0
        self.first = self.last = self.seq_lo = self.seq_hi = 0

    def add(self, seq: int, fragment: str, first: int, last: int) -> None:
        if self.n:
            line = f"\n{seq - self.seq_hi}\t{fragment}"
            self.first, self.last = min(self.first, first), max(self.last, last)
        else:
            line = f"{seq}\t{fragment}"
            self.first, self.last, self.seq_lo = first, last, seq
        self.parts.append(self.compressor.compress(line.encode("utf-8")))
        self.seq_hi = seq
        self.n += count_items(fragment)

    def write(self, conn: sqlite3.Connection, device: str, fold: int) -> int:
        body = b"".join(self.parts) + self.compressor.flush()
        conn.execute(
            "INSERT INTO history (device, ts_ms, last_ts_ms, n, seq_lo, seq_hi, fold, body)"
            " VALUES (?,?,?,?,?,?,?,?)",
            (device, self.first, self.last, self.n, self.seq_lo, self.seq_hi, fold, body))
        return self.n


def _unfolded(conn: sqlite3.Connection, cursor: int) -> Iterator[tuple[int, int, int, bytes]]:
    return conn.execute(
        "SELECT id, ts_ms, last_ts_ms, body FROM telemetry WHERE id > ? AND device IS NULL"
        " ORDER BY id", (cursor,))


def fold(conn: sqlite3.Connection) -> int:
    """Fold the messages committed since the last fold into per-device history chunks,
    in one transaction with the cursor. Returns the readings folded. Store thread only."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        cursor = fold_cursor(conn)
        last = conn.execute("SELECT MAX(id) FROM telemetry").fetchone()[0]
        if last is None or last <= cursor:
            conn.execute("ROLLBACK")
            return 0
        chunks: dict[str, _Chunk] = {}
        readings = 0
        for row_id, first_ts, last_ts, body in _unfolded(conn, cursor):
            for device, fragment in split_by_device(unpack_fragment(body)).items():
                chunk = chunks.get(device)
                if chunk is None:
                    chunk = chunks[device] = _Chunk(count_items(fragment))
                # The message's time span bounds each device's: a chunk's bounds may be a
                # little wide, never too narrow (history queries filter).
                chunk.add(row_id // PARTS, fragment, first_ts, last_ts)
                if chunk.n >= MAX_CHUNK_READINGS:
                    readings += chunks.pop(device).write(conn, device, last)
        for device, chunk in chunks.items():
            readings += chunk.write(conn, device, last)
        conn.execute("INSERT INTO meta (key, value) VALUES ('fold_cursor', ?) "
                     "ON CONFLICT(key) DO UPDATE SET value=excluded.value", (str(last),))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    log.debug("history_folded", readings=readings, cursor=last)
    return readings


def remove_seqs(conn: sqlite3.Connection, seqs: list[int]) -> int:
    """Take thinned or dropped messages' readings out of the history chunks that hold
    them (in the caller's transaction). Returns the readings removed."""
    if not seqs:
        return 0
    gone = set(seqs)
    removed = 0
    rows = conn.execute("SELECT id, n, body FROM history WHERE seq_hi >= ? AND seq_lo <= ?",
                        (min(seqs), max(seqs))).fetchall()
    for row_id, n, body in rows:
        lines = chunk_lines(body)
        kept = [(s, f) for s, f in lines if s not in gone]
        if len(kept) == len(lines):
            continue
        left = sum(count_items(f) for _, f in kept)
        removed += n - left
        if kept:
            conn.execute("UPDATE history SET n=?, seq_lo=?, seq_hi=?, body=? WHERE id=?",
                         (left, kept[0][0], kept[-1][0], pack_lines(kept), row_id))
        else:
            conn.execute("DELETE FROM history WHERE id=?", (row_id,))
    return removed
