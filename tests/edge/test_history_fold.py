"""One telemetry message per commit window, and per-device history folded by maintenance.

Real SQLite files throughout: the fold's cursor and chunks move in one transaction, so a
kill at any point leaves history exactly as it was or exactly as it will be.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.history import iter_stored_readings, latest_per_point, read_point_history
from edge.historyfold import PARTS, pack_fragment
from edge.payloads import readings_fragment
from edge.store import Store
from vocab.model import Reading

REPO = Path(__file__).resolve().parents[2]
DEVICES = [f"piezo-{d}" for d in range(6)]


def poll(device: str, ts: int, points: int = 2, value: float = 1.0) -> list[Reading]:
    return [Reading(device, f"p{j}", ts, value + j, "m", "good", 100.0 + j)
            for j in range(points)]


def history(conn: sqlite3.Connection, device: str, point: str) -> list[tuple[int, float]]:
    return [(r.ts_ms, r.value) for r in read_point_history(conn, device, point, 0, 2**62,
                                                           10**6)]


def everything(conn: sqlite3.Connection) -> dict[tuple[str, str], list[tuple[int, float]]]:
    return {(d, f"p{j}"): history(conn, d, f"p{j}") for d in DEVICES for j in range(2)}


def test_a_window_of_many_devices_polls_is_one_message(tmp_path: Path) -> None:
    store = Store(tmp_path / "edge.db")
    now = int(time.time() * 1000)
    seqs = store.commit_cycles([(poll(d, now + i), []) for i, d in enumerate(DEVICES)])
    assert seqs == [[1]] * len(DEVICES)
    [message] = store.outbox.pending("telemetry", 0, 10)
    body = json.loads(message.payload)
    assert body["seq"] == 1
    assert [(r["device"], r["point"]) for r in body["readings"]] == [
        (d, f"p{j}") for d in DEVICES for j in range(2)]
    rows = store.connection.execute("SELECT id, device, n FROM telemetry").fetchall()
    assert [tuple(r) for r in rows] == [(1 * PARTS, None, 12)]
    assert store.connection.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 1


def test_a_window_is_split_into_messages_of_at_most_a_thousand_readings(
        tmp_path: Path) -> None:
    # A bound in bytes far above 1,000 readings: the count is what cuts here (the bytes
    # are tests/edge/test_message_bounds.py's).
    store = Store(tmp_path / "edge.db", max_message_bytes=10_000_000)
    now = int(time.time() * 1000)
    seqs = store.commit_cycles([(poll(f"gauge-{d}", now, points=20), []) for d in range(60)])
    assert seqs == [[1]] * 50 + [[2]] * 10  # 1,000 and 200 readings: polls are never split
    sizes = [len(json.loads(e.payload)["readings"])
             for e in store.outbox.pending("telemetry", 0, 10)]
    assert sizes == [1000, 200]


def test_a_large_poll_is_a_message_of_its_own(tmp_path: Path) -> None:
    # A message the broker refuses as too large is set aside: a logger's 60-point poll
    # must not take the small devices' readings of its window with it.
    store = Store(tmp_path / "edge.db")
    now = int(time.time() * 1000)
    polls = [poll("piezo-0", now), poll("logger-big", now, points=60), poll("piezo-1", now),
             poll("piezo-2", now)]
    assert store.commit_cycles([(p, []) for p in polls]) == [[1], [2], [3], [3]]
    devices = [{r["device"] for r in json.loads(e.payload)["readings"]}
               for e in store.outbox.pending("telemetry", 0, 10)]
    assert devices == [{"piezo-0"}, {"logger-big"}, {"piezo-1", "piezo-2"}]
    rows = store.connection.execute("SELECT device FROM outbox ORDER BY seq").fetchall()
    assert [r[0] for r in rows] == ["piezo-0", "logger-big", None]


def test_history_is_the_same_before_and_after_a_fold_and_a_kill(tmp_path: Path) -> None:
    path = tmp_path / "edge.db"
    store = Store(path)
    now = int(time.time() * 1000)
    for w in range(20):
        store.commit_cycles([(poll(d, now + w * 1000, value=w), []) for d in DEVICES[w % 3:]])
    before = everything(store.connection)
    assert len(before[("piezo-5", "p1")]) == 20
    store.connection.close()  # killed between the commits and any fold: no close()

    again = Store(path)
    assert everything(again.connection) == before
    assert again.fold() == sum(len(v) for v in before.values())
    assert again.connection.execute("SELECT COUNT(*) FROM history").fetchone()[0] == 6
    assert everything(again.connection) == before
    assert again.fold() == 0, "nothing folded twice"
    again.close()
    assert everything(sqlite3.connect(path)) == before


KILL_IN_FOLD = """
import os, signal, sys
from pathlib import Path
from edge.store import Store
store = Store(Path(sys.argv[1]))
conn = store.connection
# A real SIGKILL after the fold wrote its chunks, before its cursor moves and it commits.
conn.set_trace_callback(lambda sql: os.kill(os.getpid(), signal.SIGKILL)
                        if "'fold_cursor'" in sql and sql.startswith("INSERT") else None)
store.fold()
"""


def test_a_kill_in_the_middle_of_a_fold_loses_and_doubles_nothing(tmp_path: Path) -> None:
    path = tmp_path / "edge.db"
    store = Store(path)
    now = int(time.time() * 1000)
    for w in range(30):
        store.commit_cycles([(poll(d, now + w * 1000, value=w), []) for d in DEVICES])
    before = everything(store.connection)
    store.close()
    done = subprocess.run([sys.executable, "-c", KILL_IN_FOLD, str(path)], cwd=REPO,
                          capture_output=True, timeout=60, check=False)
    assert done.returncode == -signal.SIGKILL, done.stderr
    again = Store(path)
    assert again.connection.execute("SELECT COUNT(*) FROM history").fetchone()[0] == 0
    assert everything(again.connection) == before
    assert again.fold() == 30 * len(DEVICES) * 2
    assert everything(again.connection) == before
    again.close()


WINDOW = st.lists(st.tuples(st.sampled_from(DEVICES), st.integers(1, 2)), max_size=6)
STEP = st.one_of(WINDOW, st.just("fold"), st.just("reopen"))


@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(STEP, min_size=1, max_size=25))
def test_folds_never_lose_or_duplicate_a_reading(tmp_path: Path,
                                                 steps: list[object]) -> None:
    path = tmp_path / f"edge-{time.monotonic_ns()}.db"
    store = Store(path)
    expected: dict[tuple[str, str], list[tuple[int, float]]] = {}
    ts = int(time.time() * 1000)
    for step in steps:
        if step == "fold":
            store.fold()
        elif step == "reopen":
            store.connection.close()  # as after SIGKILL
            store = Store(path)
        else:
            cycles = []
            for device, points in step:  # type: ignore[attr-defined]
                ts += 1
                readings = poll(device, ts, points, value=ts % 1000)
                cycles.append((readings, []))
                for r in readings:
                    expected.setdefault((r.device, r.point), []).append((r.ts_ms, r.value))
            store.commit_cycles(cycles)
        for key, want in expected.items():
            assert history(store.connection, *key) == want
    stored = [(r.device, r.point, r.ts_ms)
              for r in iter_stored_readings(store.connection, 0, 2**62)]
    assert len(stored) == len(set(stored)) == sum(len(v) for v in expected.values())
    latest = {r.key: (r.ts_ms, r.value) for r in latest_per_point(store.connection, DEVICES)}
    assert latest == {f"{d}/{p}": v[-1] for (d, p), v in expected.items()}
    store.close()
    os.unlink(path)


def test_resend_within_the_horizon_sends_the_same_readings(tmp_path: Path) -> None:
    store = Store(tmp_path / "edge.db")
    now = int(time.time() * 1000)
    for w in range(5):
        store.commit_cycles([(poll(d, now + w * 1000, value=w), []) for d in DEVICES])
    sent = {e.seq: e.payload for e in store.outbox.pending("telemetry", 0, 10)}
    store.outbox.ack(sent)
    store.maintain(quota_bytes=10**9, retention_before_ms=0)  # folds, keeps the messages
    assert store.connection.execute("SELECT COUNT(*) FROM history").fetchone()[0] == 6
    report = store.outbox.requeue(1, 5)
    assert (report.requeued, report.missing) == (5, [])
    again = {e.seq: e.payload for e in store.outbox.pending("telemetry", 0, 10)}
    assert again == sent


def test_past_the_horizon_delivered_messages_go_and_history_stays(tmp_path: Path) -> None:
    store = Store(tmp_path / "edge.db", resend_horizon_s=0)
    now = int(time.time() * 1000) - 10_000
    for w in range(5):
        store.commit_cycles([(poll(d, now + w * 1000, value=w), []) for d in DEVICES])
    store.commit_cycles([(poll("piezo-0", now + 9000), [])])  # seq 6, not delivered
    store.outbox.ack(range(1, 6))
    store.outbox.flush_acks()  # as the next poll's commit would
    store.maintain(quota_bytes=10**9, retention_before_ms=0)
    left = store.connection.execute("SELECT id / ? FROM telemetry", (PARTS,)).fetchall()
    assert [r[0] for r in left] == [6], "only the undelivered message is kept"
    assert store.outbox.requeue(1, 5).missing == [1, 2, 3, 4, 5]
    assert len(history(store.connection, "piezo-3", "p0")) == 5
    assert len(history(store.connection, "piezo-0", "p0")) == 6


SCHEMA_2 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE telemetry (
    id INTEGER PRIMARY KEY, device TEXT, ts_ms INTEGER, last_ts_ms INTEGER, n INTEGER,
    body BLOB);
CREATE INDEX idx_telemetry_device_last_ts ON telemetry (device, last_ts_ms);
CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY, kind TEXT, created_ms INTEGER, payload TEXT, device TEXT,
    pending INTEGER);
CREATE INDEX idx_outbox_alarms ON outbox (seq) WHERE kind = 'alarm';
CREATE TABLE outbox_channels (name TEXT PRIMARY KEY, bit INTEGER UNIQUE);
INSERT INTO outbox_channels VALUES ('mqtt', 1);
INSERT INTO meta VALUES ('schema', '2');
"""


def write_schema_2_store(path: Path, now: int) -> None:
    """A store as the previous version wrote it: a row per message and device, indexed."""
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA_2)
    for seq in range(1, 11):
        for part, device in enumerate(("piezo-0", "piezo-1")):
            readings = poll(device, now + seq * 1000, value=seq)
            conn.execute("INSERT INTO telemetry VALUES (?,?,?,?,?,?)",
                         (seq * PARTS + part, device, now + seq * 1000, now + seq * 1000, 2,
                          pack_fragment(readings_fragment(readings))))
        if seq > 8:  # the last two not delivered yet
            conn.execute("INSERT INTO outbox VALUES (?, 'telemetry', ?, NULL, 'piezo-0', 1)",
                         (seq, now))
    conn.commit()
    conn.close()


def test_a_schema_2_store_stays_readable_and_grows_the_new_way(tmp_path: Path) -> None:
    path = tmp_path / "edge.db"
    now = int(time.time() * 1000) - 60_000
    write_schema_2_store(path, now)
    store = Store(path)
    conn = store.connection
    assert conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()[0] == "3"
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert "idx_telemetry_device_last_ts" not in indexes and "idx_telemetry_legacy" in indexes
    assert [v for _, v in history(conn, "piezo-1", "p0")] == [float(s) for s in range(1, 11)]
    # Its unsent messages go out as they were stored, with both devices' parts.
    pending = [json.loads(e.payload) for e in store.outbox.pending("telemetry", 0, 10)]
    assert [(m["seq"], len(m["readings"])) for m in pending] == [(9, 4), (10, 4)]
    assert store.commit_cycles([(poll("piezo-1", now + 20_000, value=20), [])]) == [[11]]
    assert store.fold() == 2, "legacy rows are not folded again"
    want = [float(s) for s in range(1, 11)] + [20.0]
    assert [v for _, v in history(conn, "piezo-1", "p0")] == want
    latest = {r.key: r.value for r in latest_per_point(conn, ["piezo-0", "piezo-1"])}
    assert latest == {"piezo-0/p0": 10.0, "piezo-0/p1": 11.0, "piezo-1/p0": 20.0,
                      "piezo-1/p1": 21.0}
    # Retention deletes delivered legacy rows and history chunks alike, and counts them.
    store.outbox.ack([9, 10, 11])
    store.outbox.flush_acks()  # as the next poll's commit would
    counters = store.maintain(quota_bytes=10**9, retention_before_ms=now + 30_000)
    assert counters.retention_deleted == 10 * 4 + 2
    assert history(conn, "piezo-1", "p0") == []
    store.close()
