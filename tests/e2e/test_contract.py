"""Real payloads from a running gateway validate against the schemas in docs/mqtt.md."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest

from edge.payloads import alarm_payload, mark_replay, status_payload, telemetry_payload
from vocab.model import AlarmTransition, Reading

DOC = Path(__file__).resolve().parents[2] / "docs" / "mqtt.md"


def schemas() -> dict[str, dict]:
    blocks = re.findall(r"```json\n(.*?)\n```", DOC.read_text(), re.S)
    found = {}
    for block in blocks:
        schema = json.loads(block)
        jsonschema.Draft202012Validator.check_schema(schema)
        found[schema["$id"]] = schema
    return found


def test_doc_has_a_schema_per_topic() -> None:
    assert set(schemas()) == {"status", "telemetry", "alarms", "events", "health",
                              "command_request", "command_reply"}


@pytest.mark.parametrize("quality", ["good", "bad"])
def test_payloads_match_the_documented_schemas(quality: str) -> None:
    s = schemas()
    good = quality == "good"
    reading = Reading("level-1", "water_level", 1_700_000_000_000, 123.42 if good else None,
                      "m", quality, 12342.0 if good else None,  # type: ignore[arg-type]
                      None if good else "timeout")
    telemetry = telemetry_payload(7, [reading])
    jsonschema.validate(json.loads(telemetry), s["telemetry"])
    jsonschema.validate(json.loads(mark_replay(telemetry)), s["telemetry"])
    transition = AlarmTransition("level-high@1", "level-high", "level-1", "water_level",
                                 "warning", "raised", 123.6, 123.5, 1_700_000_000_000,
                                 "level-1/water_level warning", "above")
    jsonschema.validate(json.loads(alarm_payload(8, transition)), s["alarms"])
    jsonschema.validate(json.loads(status_payload("online")), s["status"])


def test_schema_rejects_a_payload_without_seq() -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"readings": []}, schemas()["telemetry"])
