"""TLS with a client certificate, and MQTT 5, against a real Mosquitto."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.support import Broker, Recorder, free_port, site_config, start_edge, wait_for_port


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(d: Path) -> dict[str, Path]:
    """A test CA, a server certificate for 127.0.0.1 and a client certificate."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
            "/CN=test-ca", "-keyout", "ca.key", "-out", "ca.crt", cwd=d)
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1"),
                      ("client", "extendedKeyUsage=clientAuth")):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout",
                f"{name}.key", "-out", f"{name}.csr", cwd=d)
        (d / f"{name}.ext").write_text(ext + "\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out",
                f"{name}.crt", cwd=d)
    return {n: d / n for n in ("ca.crt", "server.crt", "server.key", "client.crt",
                               "client.key")}


def test_tls_with_client_certificate(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    broker = Broker(tmp_path, extra=(
        f"cafile {pki['ca.crt']}\ncertfile {pki['server.crt']}\nkeyfile {pki['server.key']}\n"
        "require_certificate true\n"))
    broker.start()
    modbus_port = free_port()
    config = site_config(tmp_path, broker.port, modbus_port)
    data = yaml.safe_load(config.read_text())
    data["mqtt"]["tls"] = {"ca_file": str(pki["ca.crt"]), "cert_file": str(pki["client.crt"]),
                           "key_file": str(pki["client.key"])}
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    sim = start_edge(["simulate", "-c", str(config)], tmp_path / "sim.log")
    wait_for_port(modbus_port)
    rec = Recorder(broker.port, "reservoir/test-site/gw-test/#",
                   tls=(pki["ca.crt"], pki["client.crt"], pki["client.key"]))
    gateway = start_edge(["run", "-c", str(config)], tmp_path / "gw.log")
    try:
        rec.wait_for(lambda r: len(r.on("/telemetry")) >= 2, 20, "telemetry over TLS")
    finally:
        gateway.stop()
        sim.kill()
        rec.close()
        broker.stop()

    # Without the client certificate the broker refuses the gateway, which keeps
    # its readings in the outbox instead of losing them.
    data["mqtt"]["tls"] = {"ca_file": str(pki["ca.crt"])}
    data["mqtt"]["port"] = broker.port
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    broker.start()
    sim = start_edge(["simulate", "-c", str(config)], tmp_path / "sim2.log")
    wait_for_port(modbus_port)
    gateway = start_edge(["run", "-c", str(config)], tmp_path / "gw2.log")
    try:
        time.sleep(4)
        assert gateway.proc.poll() is None
    finally:
        gateway.stop()
        sim.kill()
        broker.stop()
    import sqlite3

    depth = sqlite3.connect(tmp_path / "edge.db").execute(
        "SELECT COUNT(*) FROM outbox").fetchone()[0]
    assert depth > 0


def test_missing_tls_file_is_a_config_error(tmp_path: Path) -> None:
    from edge.config import ConfigError, load_config

    config = site_config(tmp_path, 1883, 502)
    data = yaml.safe_load(config.read_text())
    data["mqtt"]["tls"] = {"ca_file": str(tmp_path / "nope.crt"), "cert_file": "a.crt"}
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert "mqtt.tls: cert_file and key_file go together" in str(info.value)


def test_mqtt5_reply_goes_to_the_response_topic_with_correlation(tmp_path: Path,
                                                                 broker: Broker) -> None:
    modbus_port = free_port()
    config = site_config(tmp_path, broker.port, modbus_port, gateway_id="gw-v5")
    data = yaml.safe_load(config.read_text())
    data["mqtt"]["protocol"] = "5"
    # The platform's reply space: a ResponseTopic elsewhere is refused.
    data["commands"] = {"reply_prefix": "platform/replies"}
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    sim = start_edge(["simulate", "-c", str(config)], tmp_path / "sim.log")
    wait_for_port(modbus_port)
    root = "reservoir/test-site/gw-v5"
    rec = Recorder(broker.port, "platform/replies/#", protocol=5)
    watcher = Recorder(broker.port, f"{root}/#")
    gateway = start_edge(["run", "-c", str(config)], tmp_path / "gw.log")
    requester = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="v5-requester",
                            protocol=mqtt.MQTTv5)
    requester.connect("127.0.0.1", broker.port)
    requester.loop_start()
    try:
        watcher.wait_for(lambda r: len(r.on("/telemetry")) >= 1, 20, "telemetry")
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = "platform/replies/gw-v5"
        props.CorrelationData = b"corr-42"
        requester.publish(f"{root}/cmd/get_status", json.dumps({"id": "s1"}), qos=1,
                          properties=props)
        rec.wait_for(lambda r: bool(r.messages), 15, "reply on the response topic")
        _, body, _ = rec.messages[0]
        assert body["id"] == "s1" and body["ok"] is True
        assert rec.properties[0].CorrelationData == b"corr-42"
        watcher.wait_for(lambda r: bool(r.on("/cmd/get_status/reply")), 5, "plain reply")
    finally:
        requester.loop_stop()
        gateway.stop()
        sim.kill()
        rec.close()
        watcher.close()
