"""End to end with the real processes: `edge simulate` serving the sensors and the relay
board on Modbus TCP, `edge run`, a simulated modem on a pseudo-terminal pair in this
process (answering the AT dialogue, recording every SMS, delivering replies), and a
private Mosquitto that is down when the issue's scenario says so.

Escalation delays are fractions of a minute (after_min 0.05 is 3 s) so the tests are short.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from pymodbus.client import ModbusTcpClient

from simulator.modem import ModemFault, SimulatedModem
from tests.e2e.test_contract import schemas
from tests.notify import independent
from tests.support import (
    Broker,
    EdgeProcess,
    Recorder,
    free_port,
    run_edge,
    site_config,
    start_edge,
    wait_for_port,
)

ROOT = "reservoir/test-site/gw-test"
KEEPER, OFFICER, GRID = "+8613800000001", "+8613800000002", "+8613800000003"
RELAY_UNIT = 9


def notify_section(modem: Path, **changes: Any) -> dict[str, Any]:
    return {
        "modem": {"port": str(modem), "baudrate": 115200, "command_timeout_s": 0.5,
                  "send_timeout_s": 2},
        "language": "zh", "pace_s": 1, "retry_s": 0.5, "retry_max_s": 1,
        "contacts": [{"id": "keeper", "name": "王师傅", "phone": KEEPER},
                     {"id": "water-officer", "phone": OFFICER},
                     {"id": "grid-staff", "phone": GRID}],
        "escalation": [{"after_min": 0, "contacts": ["keeper"], "min_severity": "warning"},
                       {"after_min": 0.05, "contacts": ["water-officer"],
                        "min_severity": "alarm"},
                       {"after_min": 0.15, "contacts": ["grid-staff"],
                        "min_severity": "alarm"}],
        "sirens": [{"id": "siren-1", "bus": "lan", "unit": RELAY_UNIT, "coil": 0,
                    "min_severity": "alarm", "on_s": 1, "off_s": 1, "max_s": 600}],
        **changes,
    }


class Reservoir:
    """The site's processes and equipment; ``start()`` the gateway (again) at will."""

    def __init__(self, tmp: Path, broker_port: int, levels: list[list[float]],
                 **notify: Any) -> None:
        self.tmp = tmp
        self.modbus_port = free_port()
        self.modem = SimulatedModem(tmp / "usb-Quectel_EC25-if02-port0", first_reference=40)
        self.config = site_config(tmp, broker_port, self.modbus_port, interval=0.25)
        data = yaml.safe_load(self.config.read_text())
        data["health"] = {"interval_s": 1}
        data["mqtt"].update(reconnect_min_s=0.2, reconnect_max_s=0.5)
        data["notify"] = notify_section(self.modem.link_path, **notify)
        self.config.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
        script = tmp / "values.yaml"
        script.write_text(yaml.safe_dump({"level-1/water_level": levels}))
        self.script = script
        self.sim: EdgeProcess | None = None
        self.gateway: EdgeProcess | None = None
        self.runs = 0

    def __enter__(self) -> Reservoir:
        self.modem.start()
        # The test is the modem; the simulator serves the sensors and the relay board.
        self.sim = start_edge(["simulate", "-c", str(self.config), "--values",
                               str(self.script), "--no-modem"], self.tmp / "sim.log")
        wait_for_port(self.modbus_port)
        return self

    def start(self) -> EdgeProcess:
        self.runs += 1
        self.gateway = start_edge(["run", "-c", str(self.config)],
                                  self.tmp / f"gw{self.runs}.log")
        return self.gateway

    def __exit__(self, *exc: object) -> None:
        for proc in (self.gateway, self.sim):
            if proc is not None:
                proc.stop()
        self.modem.stop()

    def texts_to(self, phone: str) -> list[str]:
        return [independent.submit_text([p.pdu for p in t.parts])
                for t in self.modem.sent if t.destination == phone and t.complete]

    def siren(self) -> bool:
        with contextlib.closing(ModbusTcpClient("127.0.0.1", port=self.modbus_port)) as c:
            c.connect()
            return bool(c.read_coils(0, count=1, device_id=RELAY_UNIT).bits[0])

    def messages(self, where: str = "1") -> list[sqlite3.Row]:
        return self.rows(f"SELECT * FROM notify_messages WHERE {where}")

    def rows(self, sql: str) -> list[sqlite3.Row]:
        conn = sqlite3.connect(self.tmp / "edge.db")
        conn.row_factory = sqlite3.Row
        try:
            return list(conn.execute(sql))
        except sqlite3.OperationalError:
            return []  # the service has not made its tables yet
        finally:
            conn.close()


def until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def stopped_broker(tmp_path: Path) -> Iterator[Broker]:
    """A private persistent broker that is not running until the test starts it."""
    broker = Broker(tmp_path, persistent=True)
    yield broker
    broker.stop()


def platform_session(broker: Broker) -> Recorder:
    """The platform's persistent subscription, made before the broker goes down: the
    broker keeps it (and queues for it) across its restart, so nothing the gateway sends
    the moment the broker is back can slip past the recorder."""
    broker.start()
    rec = Recorder(broker.port, f"{ROOT}/#", persistent=True)
    probe = Recorder(broker.port, "probe")
    try:
        deadline = time.monotonic() + 10
        while not rec.on("/probe") and time.monotonic() < deadline:
            probe.client.publish(f"{ROOT}/probe", "{}", qos=1)
            time.sleep(0.1)
        assert rec.on("/probe"), "the platform's subscription is in place"
    finally:
        probe.close()
    broker.stop()
    return rec


def test_alarm_texts_escalate_and_a_reply_stops_them_with_no_uplink(
        tmp_path: Path, stopped_broker: Broker) -> None:
    rec = platform_session(stopped_broker)
    with Reservoir(tmp_path, stopped_broker.port, [[0, 123.0], [1, 125.0]]) as site:
        site.start()
        until(lambda: len(site.texts_to(KEEPER)) == 1, "the keeper's text", 15)
        text = site.texts_to(KEEPER)[0]
        # Decoded by smspdudecoder, which shares no code with our encoder.
        assert text.startswith("【Test reservoir】报警：库水位 125m，高于限值 124.8m，")
        assert text.endswith("确认") and "回复1或" in text
        until(site.siren, "the siren switched on")
        status = run_edge(["status", "-c", str(site.config)])
        assert "pending escalations: 1" in status.stdout and "told keeper" in status.stdout
        # No acknowledgement within 3 s: the water officer's tier is added.
        until(lambda: len(site.texts_to(OFFICER)) == 1, "the second tier", 8)
        site.modem.deliver(KEEPER, "1")
        until(lambda: not site.modem.stored() and not site.rows(
            "SELECT 1 FROM notify_escalations WHERE state='active'"), "the reply taken")
        until(lambda: not site.siren(), "the siren off")
        status = run_edge(["status", "-c", str(site.config)]).stdout
        assert "pending escalations: 0" in status and "by 王师傅 via sms" in status, status
        raised = min(p.at for t in site.modem.sent for p in t.parts)
        time.sleep(max(0.0, raised + 10 - time.monotonic()))  # past the third tier (9 s)
        assert site.texts_to(GRID) == [], "the ladder stopped at the acknowledgement"
        assert not site.siren()
        # The uplink comes back: what happened reaches the platform, nothing lost.
        stopped_broker.start()
        try:
            rec.wait_for(lambda r: any(a["alarm"]["state"] == "acknowledged"
                                       for a in r.on("/alarms")), 20, "the acknowledgement")
            ack = next(a["alarm"] for a in rec.on("/alarms")
                       if a["alarm"]["state"] == "acknowledged")
            assert (ack["by"], ack["via"]) == ("王师傅", "sms")
            rec.wait_for(lambda r: len([e for e in r.on("/events")
                                        if e["event"]["type"] == "notification"]) >= 2, 10,
                         "the notification outcomes")
            outcomes = [e["event"] for e in rec.on("/events")
                        if e["event"]["type"] == "notification"]
            assert {(o["contact"], o["outcome"]) for o in outcomes} == {
                ("keeper", "sent"), ("water-officer", "sent")}
            assert all(o["references"] for o in outcomes)
            rec.wait_for(lambda r: any(e["event"].get("state") == "silent"
                                       for e in r.on("/events")), 10, "the siren's silence")
            sirens = [e["event"] for e in rec.on("/events") if e["event"]["type"] == "siren"]
            assert [(s["state"], s["reason"]) for s in sirens] == [
                ("sounding", "alarm"), ("silent", "acknowledged")]
            # As docs/mqtt.md documents them.
            documented = schemas()
            for message in rec.on("/events"):
                jsonschema.validate(message, documented["events"])
            for message in rec.on("/alarms"):
                jsonschema.validate(message, documented["alarms"])
        finally:
            rec.close()


def test_a_text_queued_at_a_sigkill_is_sent_once_after_the_restart(
        tmp_path: Path, stopped_broker: Broker) -> None:
    with Reservoir(tmp_path, stopped_broker.port, [[0, 124.0], [6, 125.0]]) as site:
        gateway = site.start()
        until(lambda: len(site.texts_to(KEEPER)) == 1, "the warning's text", 15)
        assert "预警" in site.texts_to(KEEPER)[0]
        # The network goes away: what comes next is stored and tried, never sent.
        site.modem.set_fault(ModemFault.NOT_REGISTERED)
        until(lambda: len(site.messages("state='queued' AND tries>0")) >= 2,
              "the escalated texts stored and failing", 15)
        gateway.kill()  # SIGKILL: no goodbye
        waiting = {(r["contact"], r["kind"]) for r in site.messages("state='queued'")}
        assert waiting == {("keeper", "escalated"), ("water-officer", "alarm")}
        site.modem.clear_faults()
        site.start()
        until(lambda: len(site.texts_to(KEEPER)) == 2 and len(site.texts_to(OFFICER)) == 1,
              "the stored texts sent after the restart", 15)
        time.sleep(2.0)  # anything sent twice would show now
        keeper = site.texts_to(KEEPER)
        assert len(keeper) == 2 and "升级为报警" in keeper[1], keeper
        assert len(site.texts_to(OFFICER)) == 1
        rows = site.messages("state='sent'")
        assert len(rows) == 3 and all(json.loads(r["refs"]) for r in rows), \
            [dict(r) for r in rows]  # once a fourth under heavy load: say which


@pytest.mark.parametrize("fault", [ModemFault.SEND_ERROR, ModemFault.SILENT])
def test_a_failing_modem_is_retried_reported_and_mqtt_still_gets_the_alarm(
        tmp_path: Path, private_broker: Broker, fault: ModemFault) -> None:
    with Reservoir(tmp_path, private_broker.port, [[0, 123.0], [1, 124.0]],
                   escalation=[{"after_min": 0, "contacts": ["keeper"]}]) as site:
        site.modem.set_fault(fault)
        rec = Recorder(private_broker.port, f"{ROOT}/#")
        try:
            site.start()
            rec.wait_for(lambda r: any(a["alarm"]["state"] == "raised"
                                       for a in r.on("/alarms")), 15, "the alarm on MQTT")
            rec.wait_for(lambda r: sum(e["event"].get("outcome") == "retrying"
                                       for e in r.on("/events")) >= 2, 10, "retries")
            retry = next(e["event"] for e in rec.on("/events")
                         if e["event"].get("outcome") == "retrying")
            expected = "cms_error 500" if fault is ModemFault.SEND_ERROR else \
                "modem_unresponsive"
            assert retry["error"].startswith(expected), retry
            rec.wait_for(lambda r: (_notify_health(r) or {}).get("failed_attempts", 0) >= 2,
                         10, "the failures in health")
            health = _notify_health(rec)
            assert health is not None and health["messages"]["queued"] == 1
            modem = health["modem"]
            if fault is ModemFault.SEND_ERROR:
                assert modem["failed"] >= 2 and "500" in (modem["last_error"] or "")
            else:
                assert modem["state"] == "unresponsive"
            assert site.texts_to(KEEPER) == []
            site.modem.clear_faults()
            rec.wait_for(lambda r: any(e["event"].get("outcome") == "sent"
                                       for e in r.on("/events")), 15, "the text sent")
            assert len(site.texts_to(KEEPER)) == 1
            rec.wait_for(lambda r: (_notify_health(r) or {}).get("messages", {}).get("sent")
                         == 1, 5, "the text counted as sent in health")
            health = _notify_health(rec)
            assert health is not None and health["messages"]["queued"] == 0
        finally:
            rec.close()


def _notify_health(rec: Recorder) -> dict[str, Any] | None:
    snapshots = rec.on("/health")
    return snapshots[-1].get("channels", {}).get("notify") if snapshots else None
