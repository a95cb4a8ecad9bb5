"""The demo prints each report the simulated SL 651 centre confirms: the centre's JSON
line log (``edge simulate --sl651-log``), its follower and the one-line rendering."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from edge.demo import _follow_sl651
from edge.pretty import sl651_line
from simulator.sl651_centre import ReceivedReport, _log_report

BEIJING = timezone(timedelta(hours=8))


def report(serial: int) -> ReceivedReport:
    observed = datetime(2026, 12, 6, 12, 45, tzinfo=BEIJING)
    return ReceivedReport(function=0x34, serial=serial, sent=observed, station="0033080001",
                          centre=1, password=0, end=0x03, raw=b"", observed=observed,
                          values={"ZU": 123.457, "PT": None, "DRP": [0.5] * 12})


def test_the_centre_appends_each_confirmed_report_as_a_json_line(tmp_path: Path) -> None:
    log = tmp_path / "reports.jsonl"
    logged = _log_report(1, log)
    logged(report(7))
    logged(report(8))
    lines = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    assert [r["serial"] for r in lines] == [7, 8]
    assert lines[0]["function"] == "34H" and lines[0]["values"]["ZU"] == 123.457
    assert lines[0]["observed"] == "2026-12-06T12:45:00+08:00"


def test_a_report_is_one_line_in_local_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        line = sl651_line({"centre": 1, "function": "34H", "serial": 7,
                           "observed": "2026-12-06T12:45:00+08:00",
                           "values": {"ZU": 123.457, "PT": None, "DRP": [0.5] * 12}})
    finally:
        monkeypatch.undo()
        time.tzset()
    assert line == ("04:45:00  centre 1  SL 651   34H hourly       serial 7: "
                    "ZU 123.457  PT —  DRP [12 values]")


def test_the_follower_prints_whole_lines_only(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "reports.jsonl"
    stop = threading.Event()
    follower = threading.Thread(target=_follow_sl651, args=(log, stop))
    follower.start()
    try:
        first = json.dumps({"centre": 1, "function": "33H", "serial": 1, "observed": None,
                            "values": {"ZU": 120.5}})
        with log.open("w", encoding="utf-8") as out:
            out.write(first + "\n" + first[:10])  # the second is still being written
            out.flush()
            time.sleep(0.6)
            out.write(first[10:].replace('"serial": 1', '"serial": 2') + "\n")
        time.sleep(0.6)
    finally:
        stop.set()
        follower.join(5)
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 2 and "serial 1: ZU 120.5" in printed[0], printed
    assert "33H added" in printed[1] and "--:--:--" in printed[1]
