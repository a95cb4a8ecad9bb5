"""The store: one transaction per cycle, seq persisted, outbox rows leave only on ack."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from edge.store import Store
from vocab.model import AlarmTransition, Reading


def reading(value: float, ts: int = 1_700_000_000_000) -> Reading:
    return Reading("level-1", "water_level", ts, value, "m", "good", value)


def transition(state: str = "raised", ts: int = 1_700_000_000_000) -> AlarmTransition:
    return AlarmTransition("level-high@1", "level-high", "level-1", "water_level", "warning",
                           state, 123.6, 123.5, ts, "msg", "above")  # type: ignore[arg-type]


def test_cycle_is_stored_with_consecutive_seqs(tmp_path: Path) -> None:
    store = Store(tmp_path / "edge.db")
    seqs = store.commit_cycle([reading(123.4), reading(123.5)], [transition()])
    assert seqs == [1, 2]
    telemetry = store.outbox.pending("telemetry", 0, 10)
    assert [e.seq for e in telemetry] == [1]
    body = json.loads(telemetry[0].payload)
    assert body["seq"] == 1
    assert [r["value"] for r in body["readings"]] == [123.4, 123.5]
    alarms = store.outbox.pending("alarm", 0, 10)
    assert json.loads(alarms[0].payload)["alarm"]["state"] == "raised"
    assert store.active_alarms()[0].side == "above"
    assert len(store.readings("level-1", "water_level", 0, 2**62)) == 2


def test_seq_survives_reopen_and_never_repeats(tmp_path: Path) -> None:
    store = Store(tmp_path / "edge.db")
    store.commit_cycle([reading(1.0)], [])
    store.commit_cycle([reading(2.0)], [])
    store.outbox.ack([1, 2])
    store.close()
    reopened = Store(tmp_path / "edge.db")
    assert reopened.commit_cycle([reading(3.0)], []) == [3]


def test_only_acknowledged_rows_leave_the_outbox(tmp_path: Path) -> None:
    store = Store(tmp_path / "edge.db")
    for v in range(5):
        store.commit_cycle([reading(float(v))], [])
    store.outbox.ack([2, 4])
    assert store.outbox.flush_acks() == 2
    assert [e.seq for e in store.outbox.pending("telemetry", 0, 10)] == [1, 3, 5]
    stats = store.outbox.stats()
    assert stats.depth == 3
    assert stats.oldest_created_ms is not None


def test_failed_write_rolls_back_and_leaves_no_seq_gap(tmp_path: Path) -> None:
    store = Store(tmp_path / "edge.db")
    store.commit_cycle([reading(1.0)], [])

    # A value JSON cannot encode fails the poll after its seq was taken.
    unencodable = Reading("level-1", "water_level", 1_700_000_000_000, 1j, "m", "good")  # type: ignore[arg-type]

    with pytest.raises(TypeError):
        store.commit_cycle([reading(2.0), unencodable], [])
    assert len(store.readings("level-1", "water_level", 0, 2**62)) == 1
    assert store.commit_cycle([reading(3.0)], []) == [2]


def test_store_uses_wal_and_full_sync_by_default(tmp_path: Path) -> None:
    Store(tmp_path / "edge.db")
    conn = sqlite3.connect(tmp_path / "edge.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_cleared_alarm_is_no_longer_active(tmp_path: Path) -> None:
    store = Store(tmp_path / "edge.db")
    store.commit_cycle([], [transition("raised")])
    store.commit_cycle([], [transition("acknowledged")])
    assert store.active_alarms()[0].acked is True
    store.commit_cycle([], [transition("cleared")])
    assert store.active_alarms() == []


def test_unwritable_store_path_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    from edge.storeschema import StoreError

    with pytest.raises(StoreError, match="cannot open store"):
        Store(blocker / "edge.db")


def test_acks_are_deleted_with_the_next_cycle_and_survive_nothing_else(tmp_path: Path) -> None:
    store = Store(tmp_path / "edge.db")
    store.commit_cycle([reading(1.0)], [])
    store.outbox.ack([1])
    # Not yet deleted: a crash now re-sends seq 1 (a duplicate), it never loses it.
    other = sqlite3.connect(tmp_path / "edge.db")
    assert other.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 1
    store.commit_cycle([reading(2.0)], [])
    assert [r[0] for r in other.execute("SELECT seq FROM outbox")] == [2]
    store.outbox.ack([2])
    store.close()  # a clean stop deletes what was acknowledged
    assert other.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0


def test_new_stores_use_small_pages(tmp_path: Path) -> None:
    Store(tmp_path / "edge.db").close()
    conn = sqlite3.connect(tmp_path / "edge.db")
    assert conn.execute("PRAGMA page_size").fetchone()[0] == 512


def test_a_nan_from_the_field_does_not_make_the_poll_unstorable(tmp_path: Path) -> None:
    # A float32 logger's "no reading" is NaN; JSON cannot carry it.
    store = Store(tmp_path / "edge.db")
    nan = float("nan")
    bad = Reading("rain-1", "rainfall", 1_700_000_000_000, None, "mm", "bad", nan,
                  "not_a_number")
    inf = Reading("level-1", "water_level", 1_700_000_000_000, float("inf"), "m", "bad",
                  float("inf"), "not_a_number")
    assert store.commit_cycle([reading(123.4), bad, inf], [transition()]) == [1, 2]
    body = json.loads(store.outbox.pending("telemetry", 0, 1)[0].payload)
    by_device = {r["device"]: r for r in body["readings"] if r["quality"] == "bad"}
    assert by_device["rain-1"] == {"device": "rain-1", "point": "rainfall",
                                   "ts": 1_700_000_000_000, "value": None, "unit": "mm",
                                   "quality": "bad", "reason": "not_a_number"}
    assert by_device["level-1"]["value"] is None


def test_requeue_right_after_an_ack_rebuilds_the_message(tmp_path: Path) -> None:
    store = Store(tmp_path / "edge.db")
    store.commit_cycle([reading(1.0)], [])
    store.outbox.ack([1])  # acknowledged, delete deferred to the next poll
    report = store.outbox.requeue(1, 1)
    assert (report.requeued, report.already_queued, report.missing) == (1, 0, [])
    store.commit_cycle([reading(2.0)], [])
    assert [e.seq for e in store.outbox.pending("telemetry", 0, 10)] == [1, 2]
    first = store.outbox.pending("telemetry", 0, 1)[0]
    assert json.loads(first.payload)["readings"][0]["unit"] == "m"


def test_readings_are_one_row_per_message(tmp_path: Path) -> None:
    # A poll of 100 points appends one compressed row, not 100 rows and index entries,
    # and no per-device index entry either: what keeps the bytes written per reading low
    # on an SD card. History per device is folded out of it later.
    store = Store(tmp_path / "edge.db")
    poll = [Reading("piezo-1", f"p{j}", 1_700_000_000_000, 10.0 + j, "kPa", "good", 100.0 + j)
            for j in range(100)]
    derived = Reading("derived", "head", 1_700_000_000_000, 5.5, "m", "good")
    assert store.commit_cycle([*poll, derived], []) == [1]
    conn = sqlite3.connect(tmp_path / "edge.db")
    rows = conn.execute("SELECT device, n FROM telemetry ORDER BY id").fetchall()
    assert rows == [(None, 101)]
    body = json.loads(store.outbox.pending("telemetry", 0, 1)[0].payload)
    assert body["seq"] == 1 and len(body["readings"]) == 101
    history = store.readings("piezo-1", "p7", 0, 2**63 - 1)
    assert [(r.value, r.raw, r.unit) for r in history] == [(17.0, 107.0, "kPa")]
    assert [r.value for r in store.readings("derived", "head", 0, 2**62)] == [5.5]


def test_seq_is_recovered_from_rows_after_a_crash(tmp_path: Path) -> None:
    # Commits do not rewrite meta: a store killed between maintenances still knows the
    # last seq from its rows, including messages already delivered and deleted.
    store = Store(tmp_path / "edge.db")
    for v in range(5):
        store.commit_cycle([reading(float(v))], [transition()] if v == 2 else [])
    store.outbox.ack(range(1, 7))
    store.outbox.flush_acks()
    store._conn.close()  # no close(): as after SIGKILL
    assert Store(tmp_path / "edge.db").commit_cycle([reading(9.0)], []) == [7]


def test_seq_is_kept_when_maintenance_prunes_every_row(tmp_path: Path) -> None:
    store = Store(tmp_path / "edge.db")
    for v in range(20):
        store.outbox.ack(store.commit_cycle([reading(float(v), ts=1_000 + v)], []))
    store.outbox.flush_acks()  # as the next poll's commit would
    store.maintain(quota_bytes=10**9, retention_before_ms=10**12)
    assert store.readings("level-1", "water_level", 0, 2**62) == []
    store._conn.close()
    assert Store(tmp_path / "edge.db").commit_cycle([reading(1.0)], []) == [21]


def test_pending_reads_far_apart_messages_without_scanning_between(tmp_path: Path) -> None:
    store = Store(tmp_path / "edge.db")
    for v in range(300):
        store.commit_cycle([reading(float(v))], [])
    store.outbox.ack(range(2, 300))
    store.outbox.flush_acks()
    entries = store.outbox.pending("telemetry", 0, 10)
    assert [e.seq for e in entries] == [1, 300]
    assert [json.loads(e.payload)["readings"][0]["value"] for e in entries] == [0.0, 299.0]


def test_a_version_1_store_is_migrated_without_losing_a_reading(tmp_path: Path) -> None:
    path = tmp_path / "edge.db"
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
        INSERT INTO meta VALUES ('seq', '3');
        CREATE TABLE readings (id INTEGER PRIMARY KEY, ts_ms INTEGER, device TEXT,
            point TEXT, value REAL, raw REAL, quality TEXT, reason TEXT, seq INTEGER);
        CREATE TABLE outbox (seq INTEGER PRIMARY KEY, kind TEXT, created_ms INTEGER,
            payload TEXT, device TEXT);
        CREATE INDEX idx_outbox_kind_seq ON outbox (kind, seq);
        INSERT INTO readings VALUES (1, 1000, 'level-1', 'water_level', 1.5, 15, 'good',
            NULL, NULL);
        INSERT INTO readings VALUES (2, 2000, 'level-1', 'water_level', 2.5, 25, 'good',
            NULL, 2);
        INSERT INTO readings VALUES (3, 2000, 'rain-1', 'rainfall', 0.5, 1, 'suspect',
            'stuck', 2);
        INSERT INTO readings VALUES (4, 3000, 'level-1', 'water_level', 3.5, 35, 'good',
            NULL, 3);
        INSERT INTO outbox VALUES (3, 'telemetry', 3000, '{"seq":3,"readings":[]}',
            'level-1');
    """)
    conn.commit()
    conn.close()
    store = Store(path)
    assert [(r.ts_ms, r.value, r.raw) for r in store.readings(
        "level-1", "water_level", 0, 2**62)] == [(1000, 1.5, 15), (2000, 2.5, 25),
                                                  (3000, 3.5, 35)]
    rain = store.readings("rain-1", "rainfall", 0, 2**62)
    assert [(r.quality, r.reason) for r in rain] == [("suspect", "stuck")]
    # The queued message keeps the payload it was stored with; seqs continue.
    assert store.outbox.pending("telemetry", 0, 10)[0].payload == '{"seq":3,"readings":[]}'
    assert store.commit_cycle([reading(4.0)], []) == [4]
    assert store.outbox.requeue(2, 2).requeued == 1
    resent = json.loads(store.outbox.pending("telemetry", 1, 1)[0].payload)
    assert {r["device"] for r in resent["readings"]} == {"level-1", "rain-1"}


def test_integrity_is_checked_apart_from_opening(tmp_path: Path) -> None:
    store = Store(tmp_path / "edge.db")
    assert store.integrity == "unchecked"
    store.commit_cycle([reading(1.0)], [])
    assert store.check_integrity() == "ok" and store.integrity == "ok"
    store.interrupt_integrity_check()  # nothing running: harmless


def test_outbox_depth_leaves_out_acknowledged_messages_without_writing(tmp_path: Path) -> None:
    store = Store(tmp_path / "edge.db")
    sl651_bit = store.outbox.register_channels(
        {"mqtt": ["telemetry", "alarm"], "county": ["telemetry"]})["county"]
    for v in range(4):
        store.commit_cycle([reading(float(v))], [transition()] if v == 3 else [])
    store.outbox.ack([1, 2])
    store.outbox.ack([1], sl651_bit)
    changes = store.connection.total_changes
    # Health asks every interval: answering costs the card no transaction.
    whole, mqtt, county = (store.outbox.stats(), store.outbox.stats(1),
                           store.outbox.stats(sl651_bit))
    assert store.connection.total_changes == changes
    assert (whole.depth, whole.alarms) == (4, 1)  # seq 2 is still the county's
    assert (mqtt.depth, mqtt.alarms) == (3, 1)
    assert (county.depth, county.alarms) == (3, 0)
    store.outbox.flush_acks()
    assert store.outbox.stats() == whole
    assert store.outbox.stats(sl651_bit) == county


def test_an_acknowledged_event_deleted_with_the_newest_seq_keeps_its_seq(
        tmp_path: Path) -> None:
    store = Store(tmp_path / "edge.db")
    store.commit_cycle([reading(1.0)], [])
    event = store.queue_message("event", lambda seq: json.dumps({"seq": seq}))
    store.outbox.ack([1, event])
    store.outbox.flush_acks()
    # As after a power cut: the first process never closes, a new one opens the files.
    reopened = Store(tmp_path / "edge.db")
    assert reopened.commit_cycle([reading(2.0)], []) == [event + 1]


def test_a_commit_that_numbers_nothing_keeps_the_seq_of_what_it_deletes(
        tmp_path: Path) -> None:
    store = Store(tmp_path / "edge.db")
    event = store.queue_message("event", lambda seq: json.dumps({"seq": seq}))
    store.outbox.ack([event])
    store.commit_cycles([((), [])])  # deletes the acknowledged event, numbers nothing
    reopened = Store(tmp_path / "edge.db")  # the first never closed: as after a power cut
    assert reopened.commit_cycle([reading(2.0)], []) == [event + 1]
