"""The store: one transaction per cycle, seq persisted, outbox rows leave only on ack."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from edge.model import AlarmTransition, Reading
from edge.payloads import alarm_payload, telemetry_payload
from edge.store import Store


def reading(value: float, ts: int = 1_700_000_000_000) -> Reading:
    return Reading("level-1", "water_level", ts, value, "m", "good", value)


def transition(state: str = "raised", ts: int = 1_700_000_000_000) -> AlarmTransition:
    return AlarmTransition("level-high@1", "level-high", "level-1", "water_level", "warning",
                           state, 123.6, 123.5, ts, "msg", "above")  # type: ignore[arg-type]


def test_cycle_is_stored_with_consecutive_seqs(tmp_path: Path) -> None:
    store = Store(tmp_path / "edge.db")
    seqs = store.commit_cycle([reading(123.4), reading(123.5)], [transition()],
                              telemetry_payload, alarm_payload)
    assert seqs == [1, 2]
    telemetry = store.pending("telemetry", 0, 10)
    assert [e.seq for e in telemetry] == [1]
    body = json.loads(telemetry[0].payload)
    assert body["seq"] == 1
    assert [r["value"] for r in body["readings"]] == [123.4, 123.5]
    alarms = store.pending("alarm", 0, 10)
    assert json.loads(alarms[0].payload)["alarm"]["state"] == "raised"
    assert store.active_alarms()[0].side == "above"
    assert len(store.readings("level-1", "water_level", 0, 2**62)) == 2


def test_seq_survives_reopen_and_never_repeats(tmp_path: Path) -> None:
    store = Store(tmp_path / "edge.db")
    store.commit_cycle([reading(1.0)], [], telemetry_payload, alarm_payload)
    store.commit_cycle([reading(2.0)], [], telemetry_payload, alarm_payload)
    store.ack_outbox([1, 2])
    store.close()
    reopened = Store(tmp_path / "edge.db")
    assert reopened.commit_cycle([reading(3.0)], [], telemetry_payload, alarm_payload) == [3]


def test_only_acknowledged_rows_leave_the_outbox(tmp_path: Path) -> None:
    store = Store(tmp_path / "edge.db")
    for v in range(5):
        store.commit_cycle([reading(float(v))], [], telemetry_payload, alarm_payload)
    store.ack_outbox([2, 4])
    assert store.flush_acks() == 2
    assert [e.seq for e in store.pending("telemetry", 0, 10)] == [1, 3, 5]
    stats = store.outbox_stats()
    assert stats.depth == 3
    assert stats.oldest_created_ms is not None


def test_failed_write_rolls_back_and_leaves_no_seq_gap(tmp_path: Path) -> None:
    store = Store(tmp_path / "edge.db")
    store.commit_cycle([reading(1.0)], [], telemetry_payload, alarm_payload)

    def broken(seq: int, readings: object) -> str:
        raise RuntimeError("payload builder failed")

    with pytest.raises(RuntimeError):
        store.commit_cycle([reading(2.0)], [], broken, alarm_payload)
    assert len(store.readings("level-1", "water_level", 0, 2**62)) == 1
    assert store.commit_cycle([reading(3.0)], [], telemetry_payload, alarm_payload) == [2]


def test_store_uses_wal_and_full_sync_by_default(tmp_path: Path) -> None:
    Store(tmp_path / "edge.db")
    conn = sqlite3.connect(tmp_path / "edge.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_cleared_alarm_is_no_longer_active(tmp_path: Path) -> None:
    store = Store(tmp_path / "edge.db")
    store.commit_cycle([], [transition("raised")], telemetry_payload, alarm_payload)
    store.commit_cycle([], [transition("acknowledged")], telemetry_payload, alarm_payload)
    assert store.active_alarms()[0].acked is True
    store.commit_cycle([], [transition("cleared")], telemetry_payload, alarm_payload)
    assert store.active_alarms() == []


def test_unwritable_store_path_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    from edge.store import StoreError

    with pytest.raises(StoreError, match="cannot open store"):
        Store(blocker / "edge.db")


def test_acks_are_deleted_with_the_next_cycle_and_survive_nothing_else(tmp_path: Path) -> None:
    store = Store(tmp_path / "edge.db")
    store.commit_cycle([reading(1.0)], [], telemetry_payload, alarm_payload)
    store.ack_outbox([1])
    # Not yet deleted: a crash now re-sends seq 1 (a duplicate), it never loses it.
    other = sqlite3.connect(tmp_path / "edge.db")
    assert other.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 1
    store.commit_cycle([reading(2.0)], [], telemetry_payload, alarm_payload)
    assert [r[0] for r in other.execute("SELECT seq FROM outbox")] == [2]
    store.ack_outbox([2])
    store.close()  # a clean stop deletes what was acknowledged
    assert other.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0


def test_new_stores_use_small_pages(tmp_path: Path) -> None:
    Store(tmp_path / "edge.db").close()
    conn = sqlite3.connect(tmp_path / "edge.db")
    assert conn.execute("PRAGMA page_size").fetchone()[0] == 1024


def test_a_nan_from_the_field_does_not_make_the_poll_unstorable(tmp_path: Path) -> None:
    # A float32 logger's "no reading" is NaN; JSON cannot carry it.
    store = Store(tmp_path / "edge.db")
    nan = float("nan")
    bad = Reading("rain-1", "rainfall", 1_700_000_000_000, None, "mm", "bad", nan,
                  "not_a_number")
    inf = Reading("level-1", "water_level", 1_700_000_000_000, float("inf"), "m", "bad",
                  float("inf"), "not_a_number")
    assert store.commit_cycle([reading(123.4), bad, inf], [transition()], telemetry_payload,
                              alarm_payload) == [1, 2]
    body = json.loads(store.pending("telemetry", 0, 1)[0].payload)
    assert body["readings"][1] == {"device": "rain-1", "point": "rainfall",
                                   "ts": 1_700_000_000_000, "value": None, "unit": "mm",
                                   "quality": "bad", "reason": "not_a_number"}
    assert body["readings"][2]["value"] is None


def test_requeue_right_after_an_ack_rebuilds_the_message(tmp_path: Path) -> None:
    store = Store(tmp_path / "edge.db")
    store.commit_cycle([reading(1.0)], [], telemetry_payload, alarm_payload)
    store.ack_outbox([1])  # acknowledged, delete deferred to the next poll
    report = store.requeue(1, 1, {"level-1/water_level": "m"}, telemetry_payload,
                           alarm_payload)
    assert (report.requeued, report.already_queued, report.missing) == (1, 0, [])
    store.commit_cycle([reading(2.0)], [], telemetry_payload, alarm_payload)
    assert [e.seq for e in store.pending("telemetry", 0, 10)] == [1, 2]
    assert json.loads(store.pending("telemetry", 0, 1)[0].payload)["readings"][0]["unit"] == "m"
