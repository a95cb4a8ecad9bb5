"""Configuration errors: every class, reported as FILE:LINE: key.path: message."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from edge.config import ConfigError, load_config
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


def test_wrong_enum_value_names_file_line_and_key(tmp_path: Path) -> None:
    text = GOOD.replace("type: uint16}}", "type: flaot32}}")
    assert errors(write(tmp_path, text)) == [
        "site.yaml:18: devices[0].points[1].register.type: 'flaot32' is not one of int16, "
        "uint16, int32, uint32, int64, float32, float64 or bool"
    ]


def test_unknown_key_is_an_error_with_a_suggestion(tmp_path: Path) -> None:
    text = GOOD.replace("    poll_interval_s: 10", "    poll_interval_s: 10\n    poll_intervall: 5")
    assert errors(write(tmp_path, text)) == [
        "site.yaml:14: devices[0].poll_intervall: unknown key 'poll_intervall' "
        "(did you mean 'poll_interval_s'?)"
    ]


def test_missing_required_key(tmp_path: Path) -> None:
    text = GOOD.replace("    poll_interval_s: 10\n", "")
    assert errors(write(tmp_path, text)) == [
        "site.yaml:10: devices[0].poll_interval_s: required key is missing"
    ]


def test_unknown_bus_type(tmp_path: Path) -> None:
    text = GOOD.replace("type: modbus_tcp", "type: modbus_udp")
    assert errors(write(tmp_path, text)) == [
        "site.yaml:8: buses[1].type: type 'modbus_udp' is not one of modbus_tcp, modbus_rtu, "
        "serial_line, nmea_gnss"
    ]


def test_reference_to_missing_bus_names_both_ends(tmp_path: Path) -> None:
    text = GOOD.replace("    bus: lan\n", "    bus: lan2\n")
    assert errors(write(tmp_path, text)) == [
        "site.yaml:11: devices[0].bus: device 'level-1' refers to bus 'lan2', which is not "
        "defined (buses: rs485-1, lan)"
    ]


def test_reference_to_missing_point_names_both_ends(tmp_path: Path) -> None:
    text = GOOD.replace("point: level-1/water_level", "point: level-1/water_levl")
    assert errors(write(tmp_path, text)) == [
        "site.yaml:21: rules[0].point: rule 'level-high' refers to point "
        "'level-1/water_levl', which is not defined (device exists but has no such point)"
    ]


def test_reference_to_missing_device(tmp_path: Path) -> None:
    text = GOOD.replace("point: level-1/water_level", "point: level-9/water_level")
    assert errors(write(tmp_path, text)) == [
        "site.yaml:21: rules[0].point: rule 'level-high' refers to point "
        "'level-9/water_level', which is not defined (no device 'level-9')"
    ]


def test_unknown_site_level(tmp_path: Path) -> None:
    text = GOOD.replace("value: flood_limit", "value: flood_limt")
    assert errors(write(tmp_path, text)) == [
        "site.yaml:22: rules[0].high[0].value: rule 'level-high' uses site level "
        "'flood_limt', which is not in site.levels (flood_limit, crest)"
    ]


def test_duplicate_ids(tmp_path: Path) -> None:
    text = GOOD.replace("id: rain,", "id: water_level,").replace("id: lan,", "id: rs485-1,")
    text = text.replace("    bus: lan\n", "    bus: rs485-1\n")
    problems = errors(write(tmp_path, text))
    assert problems == [
        "site.yaml:8: buses[1].id: duplicate bus id 'rs485-1' (first defined at site.yaml:7)",
        "site.yaml:17: devices[0].points[1].id: duplicate point (device level-1) id "
        "'water_level' (first defined at site.yaml:15)",
    ]


def test_duplicate_yaml_key_is_an_error(tmp_path: Path) -> None:
    text = GOOD.replace("    unit: 1\n", "    unit: 1\n    unit: 2\n")
    assert errors(write(tmp_path, text)) == [
        "site.yaml:13: devices[0].unit: duplicate key in the same mapping"
    ]


def test_yaml_syntax_error_has_its_line(tmp_path: Path) -> None:
    text = GOOD.replace("    unit: 1\n", "    unit: [1\n")
    (problem,) = errors(write(tmp_path, text))
    assert problem.startswith("site.yaml:1")
    assert "YAML syntax error" in problem


def test_id_that_cannot_be_a_topic_level(tmp_path: Path) -> None:
    text = GOOD.replace("gateway: {id: gw-01}", "gateway: {id: gw.01}")
    (problem,) = errors(write(tmp_path, text))
    assert problem.startswith("site.yaml:3: gateway.id: 'gw.01' is not a valid id")


def test_bit_table_with_a_numeric_type(tmp_path: Path) -> None:
    text = GOOD.replace("register: {table: discrete, address: 3}",
                        "register: {table: discrete, address: 3, type: float32}")
    assert errors(write(tmp_path, text)) == [
        "site.yaml:19: devices[0].points[2].register: a discrete is one bit: type must be "
        "bool, not float32"
    ]


def test_several_errors_are_all_reported(tmp_path: Path) -> None:
    text = GOOD.replace("type: uint16}}", "type: flaot32}}").replace("unit: 1\n", "unit: 300\n")
    problems = errors(write(tmp_path, text))
    assert len(problems) == 2
    assert any("devices[0].unit" in p and "247" in p for p in problems)


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


def test_edge_check_summary_and_exit_codes(tmp_path: Path) -> None:
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


def test_typo_in_a_later_rule_is_hinted_from_its_own_type(tmp_path: Path) -> None:
    text = GOOD.replace("     hysteresis: 0.05}", "     hysteresis: 0.05}\n"
                        "  - {id: q, type: quality, point: level-1/water_level, "
                        "ofline: {after: 3}}")
    assert errors(write(tmp_path, text)) == [
        "site.yaml:24: rules[1].ofline: unknown key 'ofline' (did you mean 'offline'?)"
    ]
