"""End to end with real processes: private Mosquitto + `edge simulate` + `edge run`."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.e2e.test_contract import schemas
from tests.support import (
    Broker,
    EdgeProcess,
    Recorder,
    free_port,
    readings,
    retained_status,
    site_config,
    start_edge,
    wait_for_port,
)


@pytest.fixture
def simulated_site(tmp_path: Path, broker: Broker,
                   request: pytest.FixtureRequest) -> Iterator[tuple[Path, str]]:
    gateway_id = f"gw-{request.node.name[-20:].replace('_', '-').strip('-')}"
    modbus_port = free_port()
    config = site_config(tmp_path, broker.port, modbus_port, interval=0.3,
                         gateway_id=gateway_id)
    script = tmp_path / "values.yaml"
    # The level sits below the flood limit, rises over it, then falls back.
    script.write_text(yaml.safe_dump({
        "level-1/water_level": [[0, 123.0], [4, 123.62], [7, 123.0]],
        "level-1/rain_counter": [[0, 40]],
        "piezo-1/pressure": [[0, 152.37]],
    }))
    sim = start_edge(["simulate", "-c", str(config), "--values", str(script)],
                     tmp_path / "sim.log")
    try:
        wait_for_port(modbus_port)
        yield config, f"reservoir/test-site/{gateway_id}"
    finally:
        sim.kill()


def test_readings_and_alarms_reach_the_platform(simulated_site: tuple[Path, str],
                                                broker: Broker, tmp_path: Path) -> None:
    config, root = simulated_site
    rec = Recorder(broker.port, f"{root}/#")
    gateway: EdgeProcess = start_edge(["run", "-c", str(config)], tmp_path / "gw.log")
    try:
        rec.wait_for(lambda r: any(a["alarm"]["state"] == "cleared" for a in r.on("/alarms")),
                     25, "the level alarm to be raised and cleared")
        assert retained_status(broker.port, root)["state"] == "online"
        assert gateway.stop() == 0, gateway.output()
        rec.wait_for(lambda r: any(s.get("state") == "offline" for s in r.on("/status")), 5,
                     "offline status")
    finally:
        gateway.kill()
        rec.close()

    contract = schemas()
    for topic, body, _ in rec.messages:
        jsonschema.validate(body, contract[topic.rsplit("/", 1)[-1]])
    values = readings(rec)
    levels = [r for r in values if r["point"] == "water_level"]
    assert {r["value"] for r in levels} == {123.0, 123.62}
    assert all(r["unit"] == "m" and r["quality"] == "good" for r in levels)
    pressure = [r for r in values if r["point"] == "pressure"]
    assert pressure and all(r["value"] == 152.37 and r["unit"] == "kPa" for r in pressure)
    assert all(r["value"] == 40 for r in values if r["point"] == "rain_counter")
    timestamps = [r["ts"] for r in levels]
    assert timestamps == sorted(timestamps)

    alarms = [m["alarm"] for m in rec.on("/alarms")]
    assert [(a["state"], a["severity"]) for a in alarms] == [
        ("raised", "warning"), ("cleared", "warning")]
    assert alarms[0]["value"] == 123.62 and alarms[0]["limit"] == 123.5
    assert alarms[0]["id"] == alarms[1]["id"]

    # One seq counter over both topics: no gap, no duplicate, after a clean stop.
    seqs = sorted(m["seq"] for m in rec.on("/telemetry") + rec.on("/alarms"))
    assert seqs == list(range(1, len(seqs) + 1))
    assert retained_status(broker.port, root)["state"] == "offline"


def test_seq_continues_after_restart(simulated_site: tuple[Path, str], broker: Broker,
                                     tmp_path: Path) -> None:
    config, root = simulated_site
    rec = Recorder(broker.port, f"{root}/telemetry")
    try:
        for run in range(2):
            gateway = start_edge(["run", "-c", str(config)], tmp_path / f"gw{run}.log")
            count = len(rec.messages)
            rec.wait_for(lambda r, c=count: len(r.messages) >= c + 3, 15, "telemetry")
            assert gateway.stop() == 0, gateway.output()
        seqs = [m["seq"] for m in rec.on("/telemetry")]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    finally:
        rec.close()


def test_last_will_marks_a_killed_gateway_offline(simulated_site: tuple[Path, str],
                                                  broker: Broker, tmp_path: Path) -> None:
    config, root = simulated_site
    rec = Recorder(broker.port, f"{root}/#")
    gateway = start_edge(["run", "-c", str(config)], tmp_path / "gw.log")
    try:
        rec.wait_for(lambda r: len(r.on("/telemetry")) >= 2, 15, "telemetry")
        assert retained_status(broker.port, root)["state"] == "online"
        gateway.signal(signal.SIGKILL)
        rec.wait_for(lambda r: any(s.get("state") == "offline" for s in r.on("/status")), 15,
                     "the Last Will")
    finally:
        gateway.kill()
        rec.close()
    assert retained_status(broker.port, root)["state"] == "offline"


def test_invalid_config_stops_run_with_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("site: {id: x}\n")
    proc = start_edge(["run", "-c", str(bad)], tmp_path / "gw.log")
    assert proc.proc.wait(30) == 2
    assert "bad.yaml:1: gateway: required key is missing" in proc.output()


def test_log_level_comes_from_the_config_unless_overridden(tmp_path: Path,
                                                           broker: Broker) -> None:
    config = site_config(tmp_path, broker.port, free_port(), interval=0.3)
    data = yaml.safe_load(config.read_text())
    data["logging"] = {"level": "error"}
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    quiet = start_edge(["run", "-c", str(config)], tmp_path / "quiet.log")
    time.sleep(3)
    assert quiet.stop() == 0
    assert "gateway_started" not in quiet.output()  # an info event, below the level
    loud = start_edge(["run", "-c", str(config), "--log-level", "info"], tmp_path / "loud.log")
    time.sleep(3)
    assert loud.stop() == 0
    assert "gateway_started" in loud.output()
