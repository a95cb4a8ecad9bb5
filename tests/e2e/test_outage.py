"""Store-and-forward across broker outages, gateway crashes and a broker that never acks."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge.history import iter_stored_readings
from edge.storeschema import last_stored_seq
from tests.support import (
    Broker,
    EdgeProcess,
    Recorder,
    free_port,
    round_window_ms,
    site_config,
    start_edge,
    wait_for_port,
)

ROOT = "reservoir/test-site/gw-test"


def start_site(tmp_path: Path, broker: Broker, interval: float = 1.0) -> tuple[Path, EdgeProcess]:
    modbus_port = free_port()
    # A message a round: the outage and replay below are counted in messages.
    config = site_config(tmp_path, broker.port, modbus_port, interval=interval, rules=[],
                         commit_window_ms=round_window_ms(interval))
    script = tmp_path / "values.yaml"
    script.write_text(yaml.safe_dump({"level-1/water_level": [[0, 123.0]]}))
    sim = start_edge(["simulate", "-c", str(config), "--values", str(script)],
                     tmp_path / "sim.log")
    wait_for_port(modbus_port)
    return config, sim


def stored(tmp_path: Path) -> tuple[int, set[tuple[str, str, int]], int]:
    """(last seq, every stored reading, outbox depth) straight from the gateway's store."""
    conn = sqlite3.connect(tmp_path / "edge.db")
    try:
        seq = last_stored_seq(conn)
        rows = {(r.device, r.point, r.ts_ms) for r in iter_stored_readings(conn, 0, 2**62)}
        depth = int(conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
        return seq, rows, depth
    finally:
        conn.close()


def received(rec: Recorder) -> tuple[list[int], set[tuple[str, str, int]]]:
    messages = rec.on("/telemetry")
    seqs = [m["seq"] for m in messages]
    rows = {(r["device"], r["point"], r["ts"]) for m in messages for r in m["readings"]}
    return seqs, rows


@pytest.mark.parametrize("kill_during_outage", [False, True],
                         ids=["outage", "outage-with-gateway-sigkill"])
def test_every_reading_polled_during_a_30s_outage_arrives(
        tmp_path: Path, private_broker: Broker, kill_during_outage: bool) -> None:
    config, sim = start_site(tmp_path, private_broker)
    rec = Recorder(private_broker.port, f"{ROOT}/#", persistent=True)
    gateway = start_edge(["run", "-c", str(config)], tmp_path / "gw.log")
    try:
        rec.wait_for(lambda r: len(r.on("/telemetry")) >= 4, 20, "telemetry before outage")
        private_broker.stop()
        outage_start = time.monotonic()
        if kill_during_outage:
            time.sleep(12)
            gateway.kill()  # SIGKILL: no flush, no goodbye
            gateway = start_edge(["run", "-c", str(config)], tmp_path / "gw2.log")
        time.sleep(max(0.0, 30 - (time.monotonic() - outage_start)))
        seq_at_restart, _, depth = stored(tmp_path)
        assert depth >= 25, "the outage's telemetry must be waiting in the outbox"
        private_broker.start()
        rec.wait_for(lambda r: set(range(1, seq_at_restart + 1)) <= set(received(r)[0]),
                     30, f"every seq up to {seq_at_restart}")
        assert gateway.stop() == 0, gateway.output()
    finally:
        gateway.kill()
        sim.kill()
        rec.close()

    last_seq, stored_rows, depth = stored(tmp_path)
    seqs, got_rows = received(rec)
    assert depth == 0
    assert sorted(set(seqs)) == list(range(1, last_seq + 1)), "no seq may be missing"
    assert stored_rows == got_rows, "every stored reading reached the subscriber"
    # The backlog is replayed oldest first and marked as replay.
    # (A commit window's polls are one message: about one a second here, of which those
    # older than 10 s when the link came back are replay.)
    replayed = [m["seq"] for m in rec.on("/telemetry") if m.get("replay")]
    assert len(replayed) >= 15
    assert replayed == sorted(replayed)


def test_nothing_leaves_the_outbox_without_a_puback(tmp_path: Path,
                                                    private_broker: Broker) -> None:
    config, sim = start_site(tmp_path, private_broker, interval=0.5)
    rec = Recorder(private_broker.port, f"{ROOT}/#", persistent=True)
    gateway = start_edge(["run", "-c", str(config)], tmp_path / "gw.log")
    try:
        rec.wait_for(lambda r: len(r.on("/telemetry")) >= 4, 20, "telemetry")
        seq_before, _, _ = stored(tmp_path)
        private_broker.freeze()  # connection open, nothing acknowledged
        time.sleep(5)
        seq_frozen, _, depth = stored(tmp_path)
        assert seq_frozen - seq_before >= 8
        # Every message queued during the freeze is still in the outbox.
        assert depth >= seq_frozen - seq_before
        private_broker.crash()  # the connection drops with messages in flight
        time.sleep(2)
        _, _, depth_after_drop = stored(tmp_path)
        assert depth_after_drop >= depth
        private_broker.start()
        rec.wait_for(lambda r: set(range(seq_before + 1, seq_frozen + 1)) <= set(
            received(r)[0]), 30, "the messages of the freeze")
        assert gateway.stop() == 0
    finally:
        gateway.kill()
        sim.kill()
        rec.close()
    last_seq, _, depth = stored(tmp_path)
    assert depth == 0
    assert set(received(rec)[0]) >= set(range(seq_before + 1, last_seq + 1))


def test_tiny_quota_thins_telemetry_keeps_every_alarm_and_says_so(
        tmp_path: Path, private_broker: Broker) -> None:
    modbus_port = free_port()
    config = site_config(tmp_path, private_broker.port, modbus_port, interval=0.1)
    data = yaml.safe_load(config.read_text())
    # The smallest quota allowed: a window's polls are one compressed message, so 25 s of
    # outage fill little more than that.
    data["store"].update({"quota_mb": 0.05, "maintenance_interval_s": 1})
    data["health"] = {"interval_s": 1}
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    script = tmp_path / "values.yaml"
    # The level crosses the flood limit every second: an alarm transition per second.
    steps = [[t, 124.0 if t % 2 else 123.0] for t in range(0, 120)]
    script.write_text(yaml.safe_dump({"level-1/water_level": steps}))
    sim = start_edge(["simulate", "-c", str(config), "--values", str(script)],
                     tmp_path / "sim.log")
    wait_for_port(modbus_port)
    rec = Recorder(private_broker.port, f"{ROOT}/#", persistent=True)
    gateway = start_edge(["run", "-c", str(config)], tmp_path / "gw.log")
    try:
        rec.wait_for(lambda r: len(r.on("/alarms")) >= 2, 20, "alarms before the outage")
        private_broker.stop()
        time.sleep(25)
        conn = sqlite3.connect(tmp_path / "edge.db")
        thinned = dict(conn.execute("SELECT key, value FROM meta WHERE key LIKE 'quota.%'"))
        conn.close()
        assert int(thinned.get("quota.thinned_messages", 0)) > 0, thinned
        private_broker.start()
        conn = sqlite3.connect(tmp_path / "edge.db")
        alarm_seqs = {s for (s,) in conn.execute("SELECT seq FROM alarm_events")}
        conn.close()
        rec.wait_for(lambda r: alarm_seqs <= {m["seq"] for m in r.on("/alarms")}, 30,
                     f"all {len(alarm_seqs)} alarm transitions")
        rec.wait_for(lambda r: any(h["store"]["thinned_messages"] > 0 for h in r.on("/health")),
                     10, "health reporting the thinning")
    finally:
        gateway.stop()
        sim.kill()
        rec.close()
    health = [h for h in rec.on("/health") if h["store"]["thinned_messages"] > 0][-1]
    assert health["store"]["quota_bytes"] == int(0.05 * 1024 * 1024)
    assert "dropped_messages" in health["store"] and "history_pruned" in health["store"]
    assert len(alarm_seqs) >= 20


def start_limited(tmp_path: Path, packet_limit: int, **site: Any,
                  ) -> tuple[Broker, EdgeProcess, Recorder, EdgeProcess]:
    """A private broker that takes packets up to ``packet_limit`` bytes, the small site
    (``site`` passed to ``site_config``) simulated, a telemetry recorder and the gateway."""
    broker = Broker(tmp_path, extra=f"max_packet_size {packet_limit}\n")
    broker.start()
    modbus_port = free_port()
    config = site_config(tmp_path, broker.port, modbus_port, interval=0.5, rules=[], **site)
    sim = start_edge(["simulate", "-c", str(config)], tmp_path / "sim.log")
    wait_for_port(modbus_port)
    rec = Recorder(broker.port, f"{ROOT}/telemetry")
    gateway = start_edge(["run", "-c", str(config)], tmp_path / "gw.log")
    return broker, sim, rec, gateway


def test_poison_message_is_set_aside_and_the_rest_flows(tmp_path: Path) -> None:
    # The broker drops any client that sends a packet over 1,500 bytes: the telemetry of
    # a 60-point device (about 5.7 kB) is poison. The small devices' polls are gathered
    # into messages of at most mqtt.max_message_bytes, however many rounds a window
    # takes on a loaded machine: never poison.
    big = {"id": "logger-big", "bus": "lan", "unit": 3, "poll_interval_s": 6,
           "points": [{"id": f"channel_{i:02d}", "unit": "kPa", "register": {
               "table": "holding", "address": i, "type": "uint16"}} for i in range(60)]}
    broker, sim, rec, gateway = start_limited(tmp_path, 1500, extra_devices=[big],
                                              mqtt_extra={"max_message_bytes": 1400})
    try:
        rec.wait_for(lambda r: len(r.messages) >= 5, 20, "small telemetry")
        deadline = time.monotonic() + 40
        set_aside = 0
        while time.monotonic() < deadline and set_aside < 2:
            time.sleep(1)
            conn = sqlite3.connect(tmp_path / "edge.db")
            set_aside = conn.execute("SELECT COUNT(*) FROM outbox_set_aside").fetchone()[0]
            conn.close()
        assert set_aside >= 2, gateway.output()[-2000:]
        count = len(rec.messages)
        rec.wait_for(lambda r: len(r.messages) > count + 4, 15,
                     "small telemetry keeps flowing after the poison messages")
    finally:
        gateway.stop()
        sim.kill()
        rec.close()
        broker.stop()
    assert "mqtt_poison_message" in gateway.output()
    conn = sqlite3.connect(tmp_path / "edge.db")
    kinds = {d for (d,) in conn.execute("SELECT device FROM outbox_set_aside")}
    conn.close()
    assert kinds == {"logger-big"}, ("only the oversized messages are set aside", kinds)


def test_an_mqtt5_broker_s_smaller_packet_limit_is_reported_once_with_the_fix(
        tmp_path: Path) -> None:
    # Mosquitto sends its max_packet_size in the CONNACK to MQTT 5 clients: below the
    # configured message bound, larger window messages would be set aside. The keeper's
    # log says so at connect, with the bound to configure, and telemetry still flows.
    broker, sim, rec, gateway = start_limited(tmp_path, 8000, mqtt_extra={"protocol": "5"})
    try:
        rec.wait_for(lambda r: len(r.messages) >= 3, 20, "telemetry over MQTT 5")
    finally:
        gateway.stop()
        sim.kill()
        rec.close()
        broker.stop()
    lines = [line for line in gateway.output().splitlines()
             if "mqtt_broker_packet_limit_below_max_message" in line]
    topic = len(f"{ROOT}/telemetry")
    assert len(lines) == 1, gateway.output()[-2000:]
    assert "8000" in lines[0] and f"set mqtt.max_message_bytes to {8000 - 16 - topic}" in lines[0]
