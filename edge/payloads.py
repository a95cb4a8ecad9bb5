"""The JSON payloads of the MQTT contract (docs/mqtt.md holds their JSON Schemas)."""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

from edge import __version__
from vocab.model import AlarmTransition, Reading, now_ms

# mqtt.max_message_bytes: 48 KiB, under the smallest limit of the brokers a district runs
# (ThingsBoard's MQTT transport: 65,536 B by default) with room for topic and headers.
DEFAULT_MAX_MESSAGE_BYTES = 49_152


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


def readings_fragment(readings: Iterable[Reading]) -> str:
    """The readings as the items of a JSON array, without its brackets: the text
    ``json.dumps([reading_json(r) ...])`` gives, built without a dict per reading.

    The store keeps each message's readings in this form, so a message is put together
    for sending by joining strings rather than encoding JSON again. A poll of many small
    devices carries one to ten readings, and what each reading repeats from the last poll
    (its device, point, unit and quality) is encoded once per point and kept.
    """
    return ",".join([_reading_text(r) for r in readings])


def _reading_text(r: Reading) -> str:
    text = (f'{_head(r.device, r.point)}{r.ts_ms:d},"value":{_number(r.value)}'
            f"{_tail(r.unit, r.quality)}")
    if r.raw is not None and r.raw != r.value and math.isfinite(r.raw):
        text += f',"raw":{_number(r.raw)}'
    if r.reason:
        text += f',"reason":{_string(r.reason)}'
    return text + "}"


def _string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


# A reading's opening text, by device and point: made once per point, since a
# reservoir's points repeat at every poll. Two plain dicts, not an lru_cache keyed by
# (device, point), whose key tuple and list node per point held 0.26 MiB at 200 devices
# × 10 points. Ids come from the site file; a reload may bring new ones, so the table is
# emptied when it holds more points than any one site has.
_HEADS: dict[str, dict[str, str]] = {}
_MAX_HEADS = 16384
_heads_made = 0


def _head(device: str, point: str) -> str:
    global _heads_made
    points = _HEADS.get(device)
    if points is None:
        points = _HEADS[device] = {}
    head = points.get(point)
    if head is None:
        if _heads_made >= _MAX_HEADS:
            _HEADS.clear()
            _heads_made = 0
            points = _HEADS[device] = {}
        head = points[point] = f'{{"device":{_string(device)},"point":{_string(point)},"ts":'
        _heads_made += 1
    return head


@functools.lru_cache(maxsize=1024)
def _tail(unit: str, quality: str) -> str:
    return f',"unit":{_string(unit)},"quality":{_string(quality)}'


def _number(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "null"  # see reading_json: JSON has no NaN or Infinity
    if type(value) is float:
        return float.__repr__(value)  # what json.dumps writes for a float
    return json.dumps(value)  # an int, or a bool some driver passed through


def telemetry_message(seq: int, fragments: Iterable[str]) -> str:
    """A telemetry payload from stored fragments (see ``readings_fragment``)."""
    return f'{{"seq":{seq},"readings":[{",".join(f for f in fragments if f)}]}}'


def telemetry_payload(seq: int, readings: Sequence[Reading]) -> str:
    return telemetry_message(seq, [readings_fragment(readings)])


def readings_from_fragment(fragment: str) -> list[Reading]:
    """The readings of a stored fragment, as the rules and the local tools read them."""
    return [reading_from_json(i) for i in json.loads(f"[{fragment}]")]


def reading_from_json(item: dict[str, Any]) -> Reading:
    return Reading(item["device"], item["point"], item["ts"], item["value"], item["unit"],
                   item["quality"], item.get("raw", item["value"]), item.get("reason"))


_DECODER = json.JSONDecoder()


def point_readings_in_fragment(fragment: str, point: str) -> list[Reading]:
    """Only one point's readings of a stored fragment, without decoding the others.

    A rule warming up over a day of a 100-point logger would otherwise parse the other
    99 points of every message, on the event loop.
    """
    marker = f'"point":{json.dumps(point)},'
    found: list[Reading] = []
    at = fragment.find(marker)
    while at >= 0:
        # reading_json writes "device" first, and ids cannot contain braces or quotes.
        start = fragment.rfind('{"device":', 0, at)
        item, end = _DECODER.raw_decode(fragment, start)
        if item["point"] == point:
            found.append(reading_from_json(item))
        at = fragment.find(marker, end)
    return found


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
    """The same message, flagged as sent from the backlog rather than live.

    Spliced in as text: a backlog of half a million readings is not decoded and encoded
    again just to add one key. Every message is an object that starts with its seq.
    """
    return '{"replay":true,' + payload[1:]


def status_payload(state: str) -> str:
    return _dumps({"state": state, "ts": now_ms(), "version": __version__})
