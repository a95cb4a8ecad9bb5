"""Disk quota: retention, pruning of delivered history, thinning, and a full disk."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from edge.store import Store
from vocab.model import AlarmTransition, Reading

T0 = 1_700_000_000_000


def cycle(store: Store, i: int, device: str, alarm: bool = False) -> list[int]:
    readings = [Reading(device, f"p{j}", T0 + i * 1000, float(i), "m", "good", float(i))
                for j in range(5)]
    transitions = [AlarmTransition(f"r@{i}", "r", device, "p0", "warning", "raised",
                                   float(i), 1.0, T0 + i * 1000, "m", "above")] if alarm else []
    return store.commit_cycle(readings, transitions)


def test_retention_deletes_only_old_delivered_readings(tmp_path: Path) -> None:
    store = Store(tmp_path / "edge.db")
    for i in range(100):
        seqs = cycle(store, i, "logger-1")
        if i >= 10:
            store.outbox.ack(seqs)
        if i == 49:  # history is folded in chunks; retention deletes whole chunks
            store.fold()
    store.fold()
    # The first ten messages were never delivered: past retention, they stay queued.
    counters = store.maintain(quota_bytes=10**9, retention_before_ms=T0 + 50_000)
    assert counters.retention_deleted == 0, "nothing below an unsent message is pruned"
    assert store.outbox.stats().depth == 10
    store.outbox.ack(range(1, 11))
    counters = store.maintain(quota_bytes=10**9, retention_before_ms=T0 + 50_000)
    assert counters.retention_deleted == 250
    assert len(store.readings("logger-1", "p0", 0, 2**62)) == 50
    # Delivered, folded and past the resend horizon: the message rows are gone too,
    # their readings counted once (with the history chunk).
    assert store._conn.execute("SELECT COUNT(*) FROM telemetry").fetchone()[0] == 0


def test_thinning_keeps_alarms_and_counts_everything(tmp_path: Path) -> None:
    store = Store(tmp_path / "edge.db")
    alarms = 0
    for i in range(3000):
        alarm = i % 300 == 0
        alarms += alarm
        cycle(store, i, f"logger-{i % 2}", alarm)
    used = store.used_bytes()
    quota = used // 3
    counters = store.maintain(quota_bytes=quota, retention_before_ms=0)
    assert store.used_bytes() <= quota
    assert counters.thinned_messages > 0 and counters.thinned_readings > 0
    stats = store.outbox.stats()
    assert stats.alarms == alarms, "alarms are never dropped"
    # Thinning takes from the older half first: the newest messages are all there.
    newest = [e.seq for e in store.outbox.pending("telemetry", 0, 10**6)][-100:]
    assert newest[-1] - newest[0] == 99  # contiguous: no alarm among the last 100 seqs
    # Each device keeps some of its older messages (1 of N per device, not all of one).
    devices = {json.loads(e.payload)["readings"][0]["device"]
               for e in store.outbox.pending("telemetry", 0, 500)}
    assert devices == {"logger-0", "logger-1"}
    store.close()
    reopened = Store(tmp_path / "edge.db")
    assert reopened.counters.thinned_messages == counters.thinned_messages


def test_delivered_history_goes_before_anything_unsent(tmp_path: Path) -> None:
    store = Store(tmp_path / "edge.db")
    for i in range(2000):
        seqs = cycle(store, i, "logger-1")
        if i < 1500:
            store.outbox.ack(seqs)
        if i % 100 == 99:
            store.fold()
    store.outbox.flush_acks()
    store._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the file alone, no WAL
    # Tight enough that the delivered message rows (copies) are not enough: delivered
    # history chunks go too, each of the 15 delivered chunks' 500 readings counted.
    quota = int(store.used_bytes() * 0.4)
    counters = store.maintain(quota_bytes=quota, retention_before_ms=0)
    assert counters.history_pruned == 7500
    assert counters.thinned_messages == 0 and counters.dropped_messages == 0
    assert store.outbox.stats().depth == 500
    assert len(store.readings("logger-1", "p0", 0, 2**62)) == 500


def test_thinning_takes_the_readings_out_of_history_too(tmp_path: Path) -> None:
    store = Store(tmp_path / "edge.db")
    for i in range(2000):
        cycle(store, i, "logger-1")
        if i % 100 == 99:
            store.fold()
    store._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    counters = store.maintain(quota_bytes=int(store.used_bytes() * 0.4), retention_before_ms=0)
    assert counters.thinned_messages > 0
    assert counters.thinned_readings == 5 * counters.thinned_messages
    # What is left to send and what history holds are the same readings.
    sent = sorted(r["ts"] for e in store.outbox.pending("telemetry", 0, 10**6)
                  for r in json.loads(e.payload)["readings"] if r["point"] == "p0")
    kept = [r.ts_ms for r in store.readings("logger-1", "p0", 0, 2**62)]
    assert kept == sent and len(kept) == 2000 - counters.thinned_messages


def test_only_alarms_left_are_never_dropped(tmp_path: Path) -> None:
    store = Store(tmp_path / "edge.db")
    for i in range(200):
        store.commit_cycle([], [AlarmTransition(f"a@{i}", "r", "d", "p", "alarm", "raised",
                                                1.0, 0.5, T0 + i, "m" * 200, "above")])
    store.maintain(quota_bytes=1024, retention_before_ms=0)
    assert store.outbox.stats().alarms == 200


def test_disk_full_rolls_back_the_cycle_and_keeps_everything_stored(tmp_path: Path) -> None:
    store = Store(tmp_path / "edge.db")
    for i in range(50):
        cycle(store, i, "logger-1")
    pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
    # SQLITE_FULL exactly as ENOSPC gives it: the file may not grow any more.
    store._conn.execute(f"PRAGMA max_page_count={pages}")
    with pytest.raises(sqlite3.OperationalError, match="full"):
        for i in range(50, 5000):
            cycle(store, i, "logger-1")
    assert store._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    kept = store.outbox.stats().depth
    assert kept >= 50
    store._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the file alone, no WAL
    store.maintain(quota_bytes=store.used_bytes() // 2, retention_before_ms=0)
    # After making room the next cycle fits again, with the next seq.
    last = store.last_seq
    assert cycle(store, 99_999, "logger-1") == [last + 1]


def test_a_maintenance_with_nothing_to_do_writes_nothing(tmp_path: Path) -> None:
    # Each transaction is a fsync, a 4 KiB page or two on the card (docs/performance.md).
    store = Store(tmp_path / "edge.db")
    seqs = [s for i in range(20) for s in cycle(store, i, "dev")]
    store.maintain(quota_bytes=10**9, retention_before_ms=0)
    cycle(store, 20, "dev")
    store.outbox.ack(seqs[:5])
    written = store.connection.total_changes
    # Polls are flowing: the acknowledgements go with the next poll's commit.
    store.maintain(quota_bytes=10**9, retention_before_ms=0)
    assert store.connection.total_changes == written
    assert store.outbox.stats().depth == 16
    # No poll since: every device silent, the maintenance deletes them itself.
    store.maintain(quota_bytes=10**9, retention_before_ms=0)
    assert store.connection.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 16


def test_a_store_over_its_quota_deletes_what_was_delivered_first(tmp_path: Path) -> None:
    store = Store(tmp_path / "edge.db")
    seqs = [s for i in range(20) for s in cycle(store, i, "dev")]
    store.maintain(quota_bytes=10**9, retention_before_ms=0)
    cycle(store, 20, "dev")
    store.outbox.ack(seqs)  # all delivered, not yet deleted: polls are flowing
    store.maintain(quota_bytes=1, retention_before_ms=0)
    # Nothing delivered is counted as thinned or dropped: only the one unsent message.
    assert (store.counters.thinned_messages, store.counters.dropped_messages) == (0, 1)


def test_releasing_the_rows_of_the_newest_seqs_keeps_the_counter(tmp_path: Path) -> None:
    # No acknowledgement is written before the delete (the uplink takes only alarms),
    # so only the delete's own transaction can keep the counter.
    store = Store(tmp_path / "edge.db", resend_horizon_s=0)
    store.outbox.register_channels({"mqtt": ["alarm"]})
    for i in range(5):
        cycle(store, i, "dev")  # stored, numbered, queued for no channel
    newest = store.last_seq
    assert newest == 5
    store.maintain(quota_bytes=10**9, retention_before_ms=0)  # folds, then releases
    assert store.connection.execute("SELECT COUNT(*) FROM telemetry").fetchone()[0] == 0
    reopened = Store(tmp_path / "edge.db")  # the first never closed: as after a power cut
    reopened.outbox.register_channels({"mqtt": ["telemetry", "alarm"]})
    assert cycle(reopened, 9, "dev") == [newest + 1]


def test_thinning_away_the_newest_seqs_keeps_the_counter(tmp_path: Path) -> None:
    store = Store(tmp_path / "edge.db")
    seqs = [s for i in range(5) for s in cycle(store, i, "dev")]
    store.maintain(quota_bytes=1, retention_before_ms=0)  # nothing sent: all dropped
    assert store.outbox.stats().depth == 0
    reopened = Store(tmp_path / "edge.db")  # the first never closed: as after a power cut
    assert cycle(reopened, 9, "dev") == [max(seqs) + 1]
