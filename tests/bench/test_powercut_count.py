"""The power-cut bench's counting (bench/powercut/count.py), on synthetic platform logs.

The virtual-machine run itself is not part of the suite; what it concludes rests on these
counts, so they are checked here: a seq reused with different content is the failure, a
resend of the same content (``replay`` added) is not, and gaps inside a range the store
announced skipping are told apart from the others.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

COUNT_PY = Path(__file__).resolve().parents[2] / "bench" / "powercut" / "count.py"


def load_count() -> ModuleType:
    spec = importlib.util.spec_from_file_location("powercut_count", COUNT_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


count_py = load_count()


def telemetry(seq: int, value: float, replay: bool = False) -> bytes:
    body = {"seq": seq, "readings": [{"device": "dev-0", "point": "p0", "value": value},
                                     {"device": "dev-0", "point": "p1", "value": value}]}
    text = json.dumps(body)
    return ('{"replay":true,' + text[1:] if replay else text).encode()


def alarm(seq: int, state: str) -> bytes:
    return json.dumps({"seq": seq, "alarm": {"id": "a", "state": state}}).encode()


def received(boot: int, kind: str, payload: bytes):  # type: ignore[no-untyped-def]
    seq, content, readings = count_py.digest(payload)
    return count_py.Received(boot, kind, seq, content, readings)


def test_a_resend_with_the_replay_marker_is_the_same_content() -> None:
    assert count_py.digest(telemetry(7, 1.0))[1] == count_py.digest(telemetry(7, 1.0, True))[1]
    assert count_py.digest(telemetry(7, 1.0))[1] != count_py.digest(telemetry(7, 2.0))[1]
    assert count_py.digest(telemetry(7, 1.0))[2] == 2


def test_seqs_reused_with_other_content_are_counted_with_what_the_platform_drops() -> None:
    log = [received(1, "telemetry", telemetry(1, 1.0)),
           received(1, "telemetry", telemetry(2, 1.0)),
           received(1, "alarms", alarm(3, "raised")),
           # power cut: boot 2 reuses 2 and 3 for new content, resends 1 unchanged
           received(2, "telemetry", telemetry(1, 1.0, replay=True)),
           received(2, "telemetry", telemetry(2, 5.0)),
           received(2, "alarms", alarm(3, "cleared")),
           received(2, "telemetry", telemetry(4, 5.0))]
    counts = count_py.count(log, store_telemetry={1, 2, 4}, store_alarms={3}, skips=[])
    assert counts.reused_seqs == 2
    assert counts.reused_readings == 2
    assert counts.reused_alarms == 1
    assert counts.seqs == 4 and counts.messages == 7
    assert counts.missing_seqs == 0
    assert counts.alarms == 1 and counts.readings == 6


def test_gaps_inside_an_announced_skip_are_told_apart_and_store_losses_counted() -> None:
    log = [received(1, "telemetry", telemetry(seq, 1.0)) for seq in (1, 2, 3, 4)]
    log += [received(1, "alarms", alarm(5, "raised"))]
    # the cut: the store kept 1..2 only and resumed at 10; 6 was lost unpublished
    log += [received(2, "telemetry", telemetry(seq, 2.0)) for seq in (11, 12, 14)]
    counts = count_py.count(log, store_telemetry={1, 2, 11, 12, 14}, store_alarms=set(),
                            skips=[(2, 10)])
    assert counts.reused_seqs == 0
    assert counts.missing_seqs == 6  # 6..10 and 13
    assert counts.missing_in_skips == 5  # 6..10 lie in (2, 10]; 13 does not
    assert counts.skipped_seqs == 8
    assert counts.store_lost_messages == 3  # telemetry 3, 4 and alarm 5
    assert counts.store_lost_readings == 4
    assert counts.store_lost_alarms == 1


def test_the_skip_announcements_are_read_from_the_guest_console() -> None:
    console = (
        "POWERCUT_STARTED\n"
        "2026-12-06T02:49:21Z [warning  ] store_seq_resumed_after_power_loss "
        "resumed_seq=20001 skipped=9874 stored_seq=10127\n"
        "2026-12-06T02:49:22Z [warning  ] device_offline device=dev-0\n")
    assert count_py.skips_from_console(console) == [(10127, 20001)]
    assert count_py.skips_from_console("nothing here\n") == []


def test_a_payload_without_seq_and_a_bad_log_line_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no integer seq"):
        count_py.digest(b'{"state": "online"}')
    log = tmp_path / "platform.jsonl"
    log.write_text('{"boot": 1, "kind": "telemetry", "seq": 1, "digest": "x", "readings": 2}\n'
                   '{"boot": 1}\n')
    with pytest.raises(ValueError, match=r"platform.jsonl:2"):
        count_py.read_platform_log(log)
