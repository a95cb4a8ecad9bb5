"""Read-only views of a gateway's local store and status file: ``edge status``/``export``.

They open the SQLite file read-only next to the running daemon (WAL lets readers and the
writer work side by side) and need neither the daemon's cooperation nor the uplink.
"""

from __future__ import annotations

import csv
import json
import os
import sqlite3
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from edge.config import GatewaySettings
from edge.history import iter_stored_readings, latest_per_point
from edge.statusfile import read_status


class LocalStoreError(Exception):
    """The local store or status could not be read; the message says which file and why."""


def open_readonly(db_path: Path) -> sqlite3.Connection:
    """A read-only connection; the daemon keeps writing beside it (WAL)."""
    if not db_path.exists():
        raise LocalStoreError(f"no store at {db_path}: has the gateway ever run with this "
                              "configuration?")
    try:
        conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
        conn.execute("SELECT 1 FROM meta LIMIT 1")
    except sqlite3.Error as exc:
        raise LocalStoreError(f"cannot read store {db_path}: {exc}") from exc
    conn.row_factory = sqlite3.Row
    return conn


def parse_time(text: str) -> int:
    """Epoch ms from epoch ms digits or an ISO 8601 time (naive = UTC)."""
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise LocalStoreError(f"not a time: {text!r} (use ISO 8601, e.g. 2026-11-24T08:00+08:00,"
                              " or epoch milliseconds)") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _iso(ts_ms: int | None) -> str:
    if ts_ms is None:
        return "-"
    return datetime.fromtimestamp(ts_ms / 1000, UTC).isoformat(timespec="seconds")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running_pid(db: Path) -> int | None:
    """The pid of the gateway running on this store, from its status file; None if none."""
    status = read_status(db)
    pid = status.get("pid")
    if not pid or status.get("stopped") or not _process_alive(int(pid)):
        return None
    return int(pid)


def status_report(settings: GatewaySettings, out: TextIO = sys.stdout) -> int:
    db = settings.store.path
    conn = open_readonly(db)
    status = read_status(db)
    pid = status.get("pid")
    running = running_pid(db) is not None
    print(f"gateway {settings.gateway.id} at {settings.site.id}: "
          f"{'running (pid ' + str(pid) + ')' if running else 'not running'}", file=out)
    if status:
        uplink = status.get("uplink") or {}
        print(f"  status of {_iso(status.get('ts'))}: uplink "
              f"{'connected' if uplink.get('connected') else 'down'}, config "
              f"{status.get('config')}, clock synchronized: "
              f"{(status.get('clock') or {}).get('synchronized')}", file=out)
        print("devices:", file=out)
        for d in status.get("devices", []):
            state = "online " if d["online"] else "OFFLINE"
            error = f"  last error: {d['last_error']}" if d.get("last_error") else ""
            print(f"  {d['device']:<16} {state} bus {d['bus']:<10} last good "
                  f"{_iso(d.get('last_good_ms'))}  errors {d['errors']}{error}", file=out)
    depth, oldest = conn.execute("SELECT COUNT(*), MIN(created_ms) FROM outbox").fetchone()
    print(f"outbox: {depth} message(s) waiting"
          + (f", oldest from {_iso(oldest)}" if oldest else ""), file=out)
    alarms = conn.execute("SELECT * FROM alarms WHERE state != 'cleared' "
                          "ORDER BY raised_ms").fetchall()
    print(f"active alarms: {len(alarms)}", file=out)
    for a in alarms:
        acked = ""
        if a["acked"]:
            who = ", ".join(x for x in (a["acked_by"], a["acked_via"]) if x)
            acked = f" (acknowledged{' by ' + who if who else ''} at {_iso(a['acked_ms'])})"
        print(f"  [{a['severity']}] {a['message']}{acked}  id {a['alarm_id']}", file=out)
    notify_report(conn, out)
    print("last readings:", file=out)
    units = {f"{d.id}/{p.id}": p.unit for d, p in settings.iter_points()}
    devices = [d.id for d in settings.devices] + sorted({x.device for x in settings.derived})
    for r in latest_per_point(conn, devices):
        value = "-" if r.value is None else f"{r.value:g}"
        unit = units.get(r.key, "") or r.unit
        note = "" if r.quality == "good" else f"  [{r.quality}: {r.reason}]"
        print(f"  {r.key:<32} {value:>12} {unit:<5} {_iso(r.ts_ms)}{note}", file=out)
    conn.close()
    return 0


def export_readings(settings: GatewaySettings, from_ms: int, to_ms: int, point: str | None,
                    fmt: str, out: TextIO = sys.stdout) -> int:
    """Stream readings in the order they were stored; returns how many were written."""
    conn = open_readonly(settings.store.path)
    device: str | None = None
    point_id: str | None = None
    if point:
        if "/" not in point:
            raise LocalStoreError(f"--point {point!r}: use device/point, e.g. level-1/water_level")
        device, point_id = point.split("/", 1)
    units = {f"{d.id}/{p.id}": p.unit for d, p in settings.iter_points()}
    rows = (r for r in iter_stored_readings(conn, from_ms, to_ms, device)
            if point_id is None or r.point == point_id)
    count = 0
    if fmt == "csv":
        writer = csv.writer(out)
        writer.writerow(["time", "ts_ms", "device", "point", "value", "unit", "raw", "quality",
                         "reason"])
        for r in rows:
            writer.writerow([_iso(r.ts_ms), r.ts_ms, r.device, r.point, r.value,
                             units.get(r.key, "") or r.unit, r.raw, r.quality, r.reason or ""])
            count += 1
    else:
        for r in rows:
            out.write(json.dumps({"ts": r.ts_ms, "device": r.device, "point": r.point,
                                  "value": r.value, "unit": units.get(r.key, "") or r.unit,
                                  "raw": r.raw, "quality": r.quality, "reason": r.reason},
                                 ensure_ascii=False) + "\n")
            count += 1
    conn.close()
    return count


def notify_report(conn: sqlite3.Connection, out: TextIO) -> None:
    """Pending escalations, texts waiting or failed, and the last acknowledgements."""
    from edge.channels import notify_store

    if not notify_store.has_tables(conn):
        return
    pending = notify_store.pending_escalations(conn)
    print(f"pending escalations: {len(pending)}", file=out)
    for e in pending:
        told = ", ".join(e.told) or "nobody yet"
        following = f", next tier at {_iso(e.next_due_ms)}" if e.next_due_ms else \
            ", last tier reached"
        print(f"  [{e.severity}] {e.alarm_id} code {e.code}: told {told}{following}",
              file=out)
    figures = notify_store.figures(conn)
    print(f"texts: {figures['queued']} waiting, {figures['sent']} sent, "
          f"{figures['failed']} failed", file=out)
    for row in notify_store.waiting(conn)[:10]:
        error = f", last error: {row.error}" if row.error else ""
        print(f"  #{row.id} {row.kind} to {row.contact}: {row.state}, {row.tries} "
              f"tries{error}", file=out)
    acks = notify_store.recent_acknowledgements(conn)
    if acks:
        print("last acknowledgements:", file=out)
    for e in acks:
        who = e.acked_by or "(unnamed)"
        print(f"  {e.alarm_id} by {who} via {e.acked_via} at {_iso(e.acked_ms)}", file=out)
