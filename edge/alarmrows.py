"""The alarm tables' rows: the log of transitions and each alarm's current state.

Written in the store's commit transaction (edge/store.py), on the store thread.
"""

from __future__ import annotations

import json
import sqlite3

from vocab.model import AlarmTransition


def record_transition(conn: sqlite3.Connection, seq: int, t: AlarmTransition) -> None:
    """Log an alarm transition (with its seq) and bring the alarm's row up to date."""
    conn.execute(
        "INSERT INTO alarm_events (seq, alarm_id, state, severity, ts_ms, value, "
        "limit_value, message, extra) VALUES (?,?,?,?,?,?,?,?,?)",
        (seq, t.alarm_id, t.state, t.severity, t.ts_ms, t.value, t.limit, t.message,
         json.dumps(t.extra, ensure_ascii=False) if t.extra else None),
    )
    if t.state == "raised":
        conn.execute(
            "INSERT OR REPLACE INTO alarms (alarm_id, rule, device, point, severity, state,"
            " acked, raised_ms, updated_ms, value, limit_value, message, side)"
            " VALUES (?,?,?,?,?,?,0,?,?,?,?,?,?)",
            (t.alarm_id, t.rule, t.device, t.point, t.severity, t.state, t.ts_ms,
             t.ts_ms, t.value, t.limit, t.message, t.side),
        )
    elif t.state == "acknowledged":
        conn.execute(
            "UPDATE alarms SET acked=1, updated_ms=?, acked_ms=?, acked_by=?, acked_via=? "
            "WHERE alarm_id=?", (t.ts_ms, t.ts_ms, t.extra.get("by"), t.extra.get("via"),
                                 t.alarm_id),
        )
    else:
        conn.execute(
            "UPDATE alarms SET state=?, severity=COALESCE(?, severity), updated_ms=?,"
            " value=?, limit_value=?, message=?, side=? WHERE alarm_id=?",
            (t.state, t.severity, t.ts_ms, t.value, t.limit, t.message, t.side,
             t.alarm_id),
        )
