"""Seqs that survive a power cut: a seq is never given to two different messages.

The platform de-duplicates by ``seq``. With ``synchronous: normal`` a commit is not
fsynced, so a power cut can take the last commits with it after their messages were
published; a store that then numbered new messages from what it still holds would reuse
seqs the platform already has, and the platform would throw the new messages away.

So, with ``normal``, seqs are handed out from a range reserved durably ahead of use
(``meta`` ``seq.reserved``, written with a fsync of its own, once per ``block`` seqs, and
the id of the boot that reserved it). At start, if the machine has booted since the last
reservation and the store holds fewer seqs than were reserved, the unflushed tail may
have been lost after publication: numbering resumes above the reservation. The seqs in
between are a gap the platform can see, never a duplicate. A process that was only
killed (same boot) lost nothing the kernel had accepted, so it resumes without a gap;
a clean shutdown trims the reservation to what was used.

With ``synchronous: full`` every commit is fsynced before anything in it is published,
so no reservation is needed; one left by an earlier ``normal`` run is still honoured.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import structlog

log = structlog.get_logger("edge.store")

BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")
# Seqs reserved per durable write: one extra fsync and one meta page every block. At
# 800 polls/s (200 devices at 0.25 s) that is one every 12 s; after a power cut the
# platform sees a gap of at most this many seqs.
RESERVE_BLOCK = 10_000


def current_boot_id() -> str:
    """The kernel's id of this boot: changes at every power cut and reboot."""
    try:
        return BOOT_ID_FILE.read_text().strip()
    except OSError:
        return "unknown"


class SeqReservation:
    """The durable ceiling of handed-out seqs (the store thread only)."""

    def __init__(self, conn: sqlite3.Connection, synchronous: str, boot_id: str,
                 block: int = RESERVE_BLOCK) -> None:
        self._conn = conn
        self._needed = synchronous == "normal"
        self._synchronous = synchronous
        self._boot_id = boot_id
        self._block = block
        self.reserved = 0
        self.skipped = 0  # seqs left unused after a power cut (a visible gap)

    def _meta(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def resume(self, stored: int) -> int:
        """The last seq to count on at start, given the last one the store holds."""
        reserved = int(self._meta("seq.reserved") or 0)
        boot = self._meta("seq.boot")
        start = stored
        if boot is not None and boot != self._boot_id and reserved > stored:
            # A reboot since the reservation, and fewer seqs stored than reserved: the
            # unflushed tail may have been published and lost. Never number anything
            # with those seqs again.
            start = reserved
            self.skipped = reserved - stored
            log.warning("store_seq_resumed_after_power_loss", stored_seq=stored,
                        resumed_seq=reserved, skipped=self.skipped)
        self.reserved = start
        if self._needed:
            self.reserve(start)
        return start

    def ensure(self, highest: int) -> None:
        """Before seqs up to ``highest`` are used: reserve them durably if not yet done.
        Must run outside a transaction (it commits and fsyncs one of its own)."""
        if self._needed and highest > self.reserved:
            self.reserve(highest)

    def reserve(self, from_seq: int) -> None:
        self._write(from_seq + self._block)

    def release(self, last_seq: int) -> None:
        """At a clean shutdown: the seqs not used were not published; give them back."""
        self._write(last_seq)

    def _write(self, ceiling: int) -> None:
        conn = self._conn
        # FULL for this one commit: in WAL mode it fsyncs the log, so the reservation
        # (and every commit before it) is on the card before any seq in it is used.
        conn.execute("PRAGMA synchronous=FULL")
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                    [("seq.reserved", str(ceiling)), ("seq.boot", self._boot_id)])
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        finally:
            conn.execute(f"PRAGMA synchronous={self._synchronous.upper()}")
        self.reserved = ceiling
