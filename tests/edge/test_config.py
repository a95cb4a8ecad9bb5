"""Configuration: what the error cases in tests/config_cases cannot show (edge check output, the
good configuration, directories of files)."""

from __future__ import annotations

import hashlib
import json
import textwrap
from pathlib import Path

import pytest

from edge.config import ConfigError, load_config
from edge.configdigest import _canonical_pieces
from tests.support import run_edge

GOOD = """\
site: {id: yangjiayuan, name: "Yangjiayuan reservoir", timezone: Asia/Shanghai,
       levels: {flood_limit: 123.5, crest: 126.0}}
gateway: {id: gw-01}
mqtt: {host: 127.0.0.1, port: 1883, username: gw, password_env: EDGE_MQTT_PW}
store: {path: /tmp/edge-test.db}
buses:
  - {id: rs485-1, type: modbus_rtu, port: /dev/ttyUSB0, baudrate: 9600, parity: N, stopbits: 1}
  - {id: lan, type: modbus_tcp, host: 192.168.1.50, port: 502, timeout_s: 1.0}
devices:
  - id: level-1
    bus: lan
    unit: 1
    poll_interval_s: 10
    points:
      - {id: water_level, quantity: water_level, unit: m,
         register: {table: holding, address: 0, type: float32, word_order: big}}
      - {id: rain, quantity: rainfall_counter, unit: tips,
         register: {table: holding, address: 2, type: uint16}}
      - {id: door, quantity: status, register: {table: discrete, address: 3}}
rules:
  - {id: level-high, type: threshold, point: level-1/water_level,
     high: [{severity: warning, value: flood_limit}, {severity: alarm, value: 124.2}],
     hysteresis: 0.05}
"""


def write(tmp_path: Path, text: str, name: str = "site.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def errors(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return [str(p) for p in info.value.problems]


def test_good_config_loads(tmp_path: Path) -> None:
    loaded = load_config(write(tmp_path, GOOD))
    s = loaded.settings
    assert s.topic_root == "reservoir/yangjiayuan/gw-01"
    assert [b.type for b in s.buses] == ["modbus_rtu", "modbus_tcp"]
    assert s.devices[0].points[2].register.value_type == "bool"
    assert len(loaded.digest) == 16


@pytest.mark.parametrize("site", ["example-site.yaml", "demo.yaml"])
def test_digest_is_that_of_the_settings_whole_canonical_json(site: str) -> None:
    # Health reports and reload compares the digest: hashing it in pieces must not move it.
    settings = load_config(Path(__file__).parents[2] / "config" / site).settings
    whole = json.dumps(settings.model_dump(mode="json"), sort_keys=True)
    assert load_config(Path(__file__).parents[2] / "config" / site).digest == (
        hashlib.sha256(whole.encode()).hexdigest()[:16])


@pytest.mark.parametrize("value", [
    {}, [], {"b": [1, {"z": None, "a": [2.5, -0.0]}], "a": {"é": "\"x\"", "10": [], "2": {}}},
    [{"k": [True, 1e300]}, "s", [[[]]]], {"levels": {"x": 1}}, "text", 3,
])
def test_canonical_pieces_join_to_json_dumps_with_sorted_keys(value: object) -> None:
    for depth in (0, 1, 2, 3):
        assert "".join(_canonical_pieces(value, depth)) == json.dumps(value, sort_keys=True)


def test_directory_is_merged_in_name_order_with_lines_per_file(tmp_path: Path) -> None:
    head, devices = GOOD.split("devices:\n", 1)
    body, rules = devices.split("rules:\n", 1)
    write(tmp_path, head + "rules:\n" + rules, "10-site.yaml")
    extra = "devices:\n" + body.replace("type: uint16}}", "type: unit16}}")
    write(tmp_path, extra, "20-devices.yaml")
    assert errors(tmp_path) == [
        "20-devices.yaml:10: devices[0].points[1].register.type: 'unit16' is not one of "
        "int16, uint16, int32, uint32, int64, float32, float64 or bool"
    ]
    write(tmp_path, "devices:\n" + body, "20-devices.yaml")
    loaded = load_config(tmp_path)
    assert [Path(f).name for f in loaded.files] == ["10-site.yaml", "20-devices.yaml"]
    assert loaded.settings.devices[0].id == "level-1"


def test_password_comes_from_the_environment(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = load_config(write(tmp_path, GOOD))
    monkeypatch.setenv("EDGE_MQTT_PW", "s3cret")
    assert loaded.settings.mqtt.password() == "s3cret"
    monkeypatch.delenv("EDGE_MQTT_PW")
    with pytest.raises(ValueError, match="EDGE_MQTT_PW is not set"):
        loaded.settings.mqtt.password()


def test_edge_check_summary_and_exit_codes(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # `edge check` also requires the password variable GOOD names (tests/systemd/test_entry.py).
    monkeypatch.setenv("EDGE_MQTT_PW", "s3cret")
    good = run_edge(["check", "-c", str(write(tmp_path, GOOD))])
    assert good.returncode == 0, good.stderr
    assert "buses: 2" in good.stdout
    assert "devices: 1, points: 3" in good.stdout
    assert "rules: 1 (1 threshold)" in good.stdout
    text = GOOD.replace("type: uint16}}", "type: flaot32}}").replace("bus: lan\n", "bus: x\n")
    bad = run_edge(["check", "-c", str(write(tmp_path, text, "bad.yaml"))])
    assert bad.returncode == 2
    lines = bad.stderr.splitlines()
    assert lines[0].startswith("bad.yaml:18: devices[0].points[1].register.type: 'flaot32'")
    assert lines[-1] == f"1 error(s) in {tmp_path / 'bad.yaml'}"


def test_edge_check_on_missing_path(tmp_path: Path) -> None:
    result = run_edge(["check", "-c", str(tmp_path / "nope.yaml")])
    assert result.returncode == 2
    assert "nope.yaml: no such file or directory" in result.stderr


def test_shipped_configs_are_valid() -> None:
    root = Path(__file__).resolve().parents[2] / "config"
    for path in sorted(root.glob("*.yaml")):
        load_config(path)


