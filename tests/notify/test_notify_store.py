"""The notify tables: taken in once, recovered after a crash, merged, pruned, replied to."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.channels import notify_store as db
from edge.channels.escalation import Escalation, Ladder
from edge.channels.notify_config import TierConfig
from edge.channels.notify_store import NewMessage

T0 = 1_780_000_000_000
LADDER = Ladder([TierConfig(after_min=0, contacts=["keeper"]),
                 TierConfig(after_min=1, contacts=["officer"])])
PHONES = {"keeper": "+8613800000001", "officer": "+8613800000002"}


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    connection = sqlite3.connect(tmp_path / "edge.db", isolation_level=None)
    db.create_schema(connection)
    yield connection
    connection.close()


def compose(escalation: Escalation, notice: tuple[str, str]) -> NewMessage | None:
    contact, kind = notice
    if contact not in PHONES:
        return None
    return NewMessage(contact, PHONES[contact], kind, (escalation.alarm_id,),
                      (f"{kind} {escalation.alarm_id}",), kind != "clear",
                      f"{kind}: {escalation.alarm_id} code {escalation.code}")


def alarm(alarm_id: str, state: str, **extra: Any) -> dict[str, Any]:
    return {"id": alarm_id, "rule": "r", "device": "d", "point": "p", "severity": "alarm",
            "state": state, "value": 1.0, "limit": 0.5, "ts": T0, "message": "m", **extra}


def take(conn: sqlite3.Connection, *transitions: tuple[int, dict[str, Any]],
         now: int = T0) -> db.Intake:
    codes = iter(["4821", "5309", "6001"])
    return db.intake(conn, list(transitions), LADDER, compose, now,
                     lambda taken: next(c for c in codes if c not in taken))


def test_a_transition_handed_over_again_changes_nothing(conn: sqlite3.Connection) -> None:
    first = take(conn, (5, alarm("a", "raised")), (6, alarm("b", "raised")))
    assert first.queued == 2 and first.applied_seq == 6
    # After a crash before the outbox acknowledgement was written: the same seqs again.
    again = take(conn, (5, alarm("a", "raised")), (6, alarm("b", "raised")),
                 (7, alarm("a", "acknowledged", by="王师傅", via="sms")))
    assert again.queued == 0 and again.applied_seq == 7
    assert [e.alarm_id for e in again.escalations] == ["a"]
    assert len(db.waiting(conn)) == 2
    assert [e.alarm_id for e in db.pending_escalations(conn)] == ["b"]
    assert db.figures(conn) == {"queued": 2, "sent": 0, "failed": 0, "merged": 0,
                                "escalations_pending": 1}


def test_codes_stay_unique_and_replies_find_their_alarms(conn: sqlite3.Connection) -> None:
    take(conn, (1, alarm("a", "raised")), (2, alarm("b", "raised")))
    codes = {e.alarm_id: e.code for e in db.pending_escalations(conn)}
    assert sorted(codes.values()) == ["4821", "5309"]
    assert db.alarms_for_reply(conn, "keeper", []) == (["a", "b"], [])
    assert db.alarms_for_reply(conn, "officer", []) == ([], [])  # told of nothing yet
    assert db.alarms_for_reply(conn, "officer", [codes["b"], "7777"]) == (["b"], ["7777"])


def test_the_ladder_climbs_from_the_store(conn: sqlite3.Connection) -> None:
    take(conn, (1, alarm("a", "raised")))
    assert db.next_tier_ms(conn) == T0 + 60_000
    assert db.advance_due(conn, LADDER, compose, T0 + 59_999).queued == 0
    climbed = db.advance_due(conn, LADDER, compose, T0 + 60_000)
    assert climbed.queued == 1 and db.next_tier_ms(conn) is None
    assert [(r.contact, r.kind) for r in db.waiting(conn)] == [("keeper", "alarm"),
                                                               ("officer", "alarm")]


def test_a_crash_while_sending_queues_the_text_again_flagged(conn: sqlite3.Connection) -> None:
    take(conn, (1, alarm("a", "raised")))
    row = db.waiting(conn)[0]
    db.mark_sending(conn, row.id, T0 + 1)
    assert db.recover(conn, T0 + 100) == 1
    again = db.message(conn, row.id)
    assert again is not None
    assert (again.state, again.tries, again.interrupted, again.due_ms) == ("queued", 1, True,
                                                                           T0 + 100)


def test_a_summary_replaces_the_texts_it_names(conn: sqlite3.Connection) -> None:
    take(conn, (1, alarm("a", "raised")), (2, alarm("b", "raised")))
    rows = db.waiting(conn)
    summary = NewMessage("keeper", PHONES["keeper"], "summary", ("a", "b"),
                         ("x", "y"), True, "2 notices")
    merged = db.merge(conn, rows, summary, T0 + 5)
    assert [r.id for r in db.waiting(conn)] == [merged.id]
    states = conn.execute("SELECT state, merged_into FROM notify_messages WHERE id IN (?, ?)",
                          (rows[0].id, rows[1].id)).fetchall()
    assert states == [("merged", merged.id), ("merged", merged.id)]
    assert merged.alarm_ids == ("a", "b")


def test_outcomes_pacing_and_pruning(conn: sqlite3.Connection) -> None:
    take(conn, (1, alarm("a", "raised")))
    row = db.waiting(conn)[0]
    db.record_outcome(conn, row.id, "queued", (), "cms_error 500", T0 + 10, T0 + 20_000)
    retry = db.message(conn, row.id)
    assert retry is not None and (retry.due_ms, retry.error) == (T0 + 20_000, "cms_error 500")
    db.record_outcome(conn, row.id, "sent", (41, 42), None, T0 + 30, None)
    sent = db.message(conn, row.id)
    assert sent is not None and (sent.state, sent.refs, sent.sent_ms) == ("sent", (41, 42),
                                                                          T0 + 30)
    assert db.last_sent(conn) == {PHONES["keeper"]: T0 + 30}
    take(conn, (2, alarm("a", "acknowledged", by="x", via="sms", ts=T0 + 40)), now=T0 + 40)
    assert [(e.alarm_id, e.acked_by, e.acked_ms) for e in db.recent_acknowledgements(conn)] == [
        ("a", "x", T0 + 40)]
    take(conn, (3, alarm("a", "cleared")), now=T0 + 50)
    # The sent text and the finished escalation go; the all-clear not yet sent stays.
    assert db.prune(conn, T0 + 60) == 2
    assert [r.kind for r in db.waiting(conn)] == ["clear"]
    assert conn.execute("SELECT COUNT(*) FROM notify_escalations").fetchone()[0] == 0
