"""`edge status`, `edge export` and `edge tail` against a real running gateway."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import yaml

from tests.support import (
    Broker,
    Recorder,
    free_port,
    run_edge,
    site_config,
    start_edge,
    wait_for_port,
)


def test_status_export_and_tail_while_the_uplink_is_down(tmp_path: Path,
                                                         private_broker: Broker) -> None:
    modbus_port = free_port()
    config = site_config(tmp_path, private_broker.port, modbus_port, interval=0.5)
    data = yaml.safe_load(config.read_text())
    data["health"] = {"interval_s": 1}
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    script = tmp_path / "values.yaml"
    script.write_text(yaml.safe_dump({"level-1/water_level": [[0, 123.9]]}))
    sim = start_edge(["simulate", "-c", str(config), "--values", str(script)],
                     tmp_path / "sim.log")
    wait_for_port(modbus_port)
    started = int(time.time() * 1000)
    gateway = start_edge(["run", "-c", str(config)], tmp_path / "gw.log")
    try:
        rec = Recorder(private_broker.port, "reservoir/test-site/gw-test/#")
        rec.wait_for(lambda r: len(r.on("/telemetry")) >= 4, 20, "telemetry")
        rec.close()
        tail = run_edge(["tail", "-c", str(config), "--seconds", "2.5"])
        assert tail.returncode == 0, tail.stderr
        assert "reading  level-1/water_level" in tail.stdout
        assert "123.9 m" in tail.stdout

        private_broker.stop()  # the uplink is down: local tools must still work
        time.sleep(2.5)
        status = run_edge(["status", "-c", str(config)])
        assert status.returncode == 0, status.stderr
        out = status.stdout
        assert "running (pid" in out and "uplink down" in out
        assert "level-1          online" in out
        assert "active alarms: 1" in out and "level-high" in out
        assert "level-1/water_level" in out and "123.9" in out
        depth = int(out.split("outbox: ")[1].split(" ")[0])
        assert depth > 0
    finally:
        gateway.stop()
        sim.kill()

    stopped = run_edge(["status", "-c", str(config)])
    assert "not running" in stopped.stdout

    now = int(time.time() * 1000)
    as_csv = run_edge(["export", "-c", str(config), "--from", str(started), "--to", str(now),
                       "--point", "level-1/water_level", "--format", "csv"])
    assert as_csv.returncode == 0, as_csv.stderr
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert len(rows) >= 4
    assert {r["value"] for r in rows} == {"123.9"} and {r["unit"] for r in rows} == {"m"}
    assert [int(r["ts_ms"]) for r in rows] == sorted(int(r["ts_ms"]) for r in rows)
    as_jsonl = run_edge(["export", "-c", str(config), "--from", "2000-01-01T00:00",
                         "--to", str(now), "--format", "jsonl"])
    lines = [json.loads(line) for line in as_jsonl.stdout.splitlines()]
    assert {x["point"] for x in lines} == {"water_level", "rain_counter", "pressure"}
    bad = run_edge(["export", "-c", str(config), "--from", "yesterday", "--to", str(now)])
    assert bad.returncode == 1 and "not a time: 'yesterday'" in bad.stderr


def test_status_without_a_store_says_so(tmp_path: Path) -> None:
    config = site_config(tmp_path, free_port(), free_port())
    result = run_edge(["status", "-c", str(config)])
    assert result.returncode == 1
    assert "no store at" in result.stderr
