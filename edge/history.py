"""Reading stored readings back: for the rules, the local tools and the keeper's page.

Readings are stored once, as the telemetry message that carries them (edge/store.py):
one row per message and device, its readings as compressed JSON array items. These
functions read them back per device and time range, on any connection, so the rules'
history reader and ``edge status``/``export`` never touch the writer's connection.
"""

from __future__ import annotations

import sqlite3
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from edge.payloads import point_readings_in_fragment, readings_from_fragment
from vocab.model import Reading

PARTS = 256
# A message's readings span at most this long (a GNSS averaging interval is minutes):
# bounds the index range a history query scans.
MAX_PART_SPAN_MS = 86_400_000
COMPRESSION_LEVEL = 6


def pack_fragment(fragment: str) -> bytes:
    return zlib.compress(fragment.encode("utf-8"), COMPRESSION_LEVEL)


def unpack_fragment(body: bytes) -> str:
    return zlib.decompress(body).decode("utf-8")


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
