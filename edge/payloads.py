"""The JSON payloads of the MQTT contract (docs/mqtt.md holds their JSON Schemas)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from edge import __version__
from edge.model import AlarmTransition, Reading, now_ms


def _dumps(obj: dict[str, Any]) -> str:
    # Compact separators: every byte is stored in the outbox and sent over 4G.
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def reading_json(r: Reading) -> dict[str, Any]:
    # JSON has no NaN or Infinity: a logger's "no reading" NaN must not make the whole
    # poll unstorable, so a non-finite number is sent as null (its reason says why).
    item: dict[str, Any] = {"device": r.device, "point": r.point, "ts": r.ts_ms,
                            "value": _finite(r.value), "unit": r.unit, "quality": r.quality}
    if r.raw is not None and r.raw != r.value and math.isfinite(r.raw):
        item["raw"] = r.raw
    if r.reason:
        item["reason"] = r.reason
    return item


def _finite(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


def telemetry_payload(seq: int, readings: Sequence[Reading]) -> str:
    return _dumps({"seq": seq, "readings": [reading_json(r) for r in readings]})


def alarm_payload(seq: int, t: AlarmTransition) -> str:
    alarm: dict[str, Any] = {
        "id": t.alarm_id, "rule": t.rule, "device": t.device, "point": t.point,
        "severity": t.severity, "state": t.state, "value": _finite(t.value),
        "limit": _finite(t.limit),
        "ts": t.ts_ms, "message": t.message,
    }
    alarm.update(t.extra)
    return _dumps({"seq": seq, "alarm": alarm})


def mark_replay(payload: str) -> str:
    """The same message, flagged as sent from the backlog rather than live."""
    body = json.loads(payload)
    body["replay"] = True
    return _dumps(body)


def status_payload(state: str) -> str:
    return _dumps({"state": state, "ts": now_ms(), "version": __version__})
