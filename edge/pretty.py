"""One-line renderings of gateway messages for people: ``edge tail`` and ``edge demo``."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any


def _clock(ts_ms: int | None) -> str:
    if not ts_ms:
        return "--:--:--"
    return datetime.fromtimestamp(ts_ms / 1000).strftime("%H:%M:%S")


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}".rstrip("0").rstrip(".")


def render(topic: str, body: dict[str, Any]) -> list[str]:
    parts = topic.split("/")
    kind = parts[-1]
    if kind == "telemetry":
        replay = "  (replay)" if body.get("replay") else ""
        lines = []
        for r in body.get("readings", []):
            note = "" if r["quality"] == "good" else f"  [{r['quality']}: {r.get('reason')}]"
            lines.append(f"{_clock(r['ts'])}  seq {body['seq']:>6}  reading  "
                         f"{r['device'] + '/' + r['point']:<30} {_number(r['value']):>10} "
                         f"{r['unit']}{note}{replay}")
        return lines
    if kind == "alarms":
        a = body["alarm"]
        return [f"{_clock(a['ts'])}  seq {body['seq']:>6}  ALARM    {a['state'].upper():<12} "
                f"{a['severity'] or '':<8} {a['message']}"]
    if kind == "events":
        return _event(body)
    if kind == "status":
        return [f"{_clock(body.get('ts'))}               status   gateway is {body.get('state')}"]
    if kind == "health":
        devices = body.get("devices", [])
        online = sum(1 for d in devices if d.get("online"))
        outbox = body.get("outbox", {})
        return [f"{_clock(body.get('ts'))}               health   devices online "
                f"{online}/{len(devices)}, outbox {outbox.get('depth')} (oldest "
                f"{outbox.get('oldest_age_s')} s), alarms {body.get('active_alarms')}, "
                f"cpu {body.get('process', {}).get('cpu_percent')} %"]
    if kind == "reply" and len(parts) >= 2:
        verdict = "ok" if body.get("ok") else f"ERROR {body.get('error')}"
        return [f"{_clock(None)}               command  {parts[-2]} id {body.get('id')}: "
                f"{verdict}"]
    return []


def _event(body: dict[str, Any]) -> list[str]:
    e = body.get("event", {})
    head = f"{_clock(e.get('ts'))}  seq {body.get('seq', 0):>6}  "
    if e.get("type") == "notification":
        detail = f"refs {e.get('references')}" if e.get("outcome") == "sent" else \
            str(e.get("error"))
        return [f"{head}SMS      {str(e.get('outcome')).upper():<12} to {e.get('contact')}: "
                f"{e.get('text')}  [{detail}]"]
    if e.get("type") == "siren":
        return [f"{head}SIREN    {str(e.get('state')).upper():<12} {e.get('siren')} "
                f"({e.get('reason')})"]
    return []


def print_message(topic: str, payload: bytes) -> None:
    try:
        body = json.loads(payload)
    except ValueError:
        print(f"{topic}: {payload[:200]!r} (not JSON)", flush=True)
        return
    if isinstance(body, dict):
        for line in render(topic, body):
            print(line, flush=True)


# What each SL 651-2014 report function is called in the demo (docs/sl651.md).
SL651_REPORTS = {"30H": "test", "32H": "timed", "33H": "added", "34H": "hourly",
                 "37H": "query answer"}


def sl651_line(record: dict[str, Any]) -> str:
    """A report a centre confirmed (``edge simulate --sl651-log``), as the centre read it:
    its function, serial, observation time and elements by their standard mnemonics."""
    function = str(record.get("function"))
    values = []
    for name, value in (record.get("values") or {}).items():
        if isinstance(value, list):  # the hourly report's twelve 5-minute values
            value = f"[{len(value)} values]"
        values.append(f"{name} {'—' if value is None else value}")
    try:  # SL 651 times are Beijing time; shown in local time like the other lines
        observed = datetime.fromisoformat(str(record.get("observed"))).astimezone().strftime(
            "%H:%M:%S")
    except ValueError:
        observed = "--:--:--"
    return (f"{observed}  centre {record.get('centre')}  SL 651   "
            f"{function} {SL651_REPORTS.get(function, 'report'):<12} serial "
            f"{record.get('serial')}: {'  '.join(values)}")
