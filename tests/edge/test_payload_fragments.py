"""The stored readings fragment is built from cached pieces per point: the text must be
exactly what encoding every reading as a JSON object gives, whatever the reading holds."""

from __future__ import annotations

import json
import math

import pytest

from edge import payloads
from edge.payloads import reading_json, readings_fragment, readings_from_fragment
from vocab.model import Reading

READINGS = [
    Reading("dev-001", "p0", 1_733_400_000_000, 123.456, "m", "good", 123.456),
    Reading("dev-001", "p1", 1_733_400_000_001, 0.1 + 0.2, "m", "good", 30012.0),
    Reading("piezo-1", "head", 1_733_400_000_002, None, "m", "bad", None, "timeout"),
    Reading("piezo-1", "head2", 1_733_400_000_003, math.nan, "m", "bad", math.nan,
            'no "reading": logger sent NaN'),
    Reading("weir-1", "flow", 1_733_400_000_004, 12, "L/s", "suspect", 11, "jump: +3"),
    Reading("temp-1", "t", 1_733_400_000_005, -4.0e-7, "°C", "good", math.inf),
    Reading("rain-1", "sum", 1_733_400_000_006, 1e22, "毫米", "good", 1e22, "雨量\\n"),
]


def encoded_one_by_one(readings: list[Reading]) -> str:
    """The fragment as it was built before: one dict per reading, one json.dumps."""
    return json.dumps([reading_json(r) for r in readings], separators=(",", ":"),
                      ensure_ascii=False, allow_nan=False)[1:-1]


def test_the_fragment_is_the_json_of_every_reading() -> None:
    for n in range(len(READINGS) + 1):
        chosen = READINGS[:n]
        assert readings_fragment(chosen) == encoded_one_by_one(chosen)
        # Twice: the second time every piece comes from the caches.
        assert readings_fragment(chosen) == encoded_one_by_one(chosen)


def test_the_fragment_reads_back_as_the_readings() -> None:
    back = readings_from_fragment(readings_fragment(READINGS[:2]))
    assert [(r.key, r.value, r.unit, r.quality) for r in back] == [
        ("dev-001/p0", 123.456, "m", "good"), ("dev-001/p1", 0.1 + 0.2, "m", "good")]


def test_the_cached_heads_stay_bounded_and_right_past_their_limit(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A reload may bring new ids: past the limit the table starts again, and every
    fragment is still the JSON of its readings."""
    monkeypatch.setattr(payloads, "_MAX_HEADS", 5)
    monkeypatch.setattr(payloads, "_HEADS", {})
    monkeypatch.setattr(payloads, "_heads_made", 0)
    for n in range(23):
        reading = Reading(f"dev-{n % 7}", f"p{n}", 1_733_400_000_000 + n, float(n), "m",
                          "good", float(n))
        assert readings_fragment([reading]) == encoded_one_by_one([reading])
        assert sum(len(points) for points in payloads._HEADS.values()) <= 5
