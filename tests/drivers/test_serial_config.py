"""Configuration of serial buses: serial_line and nmea_gnss devices, and port warnings."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from edge.config import ConfigError, load_config
from tests.support import run_edge

SITE = """\
site: {id: kecheng-01, levels: {flood_limit: 123.5}}
gateway: {id: gw-01}
mqtt: {host: 127.0.0.1}
store: {path: /tmp/edge-serial-test.db}
buses:
  - {id: rs485-1, type: modbus_rtu, port: /dev/serial/by-id/usb-FTDI_FT232R-if00-port0}
  - {id: radar-line, type: serial_line, port: /dev/serial/by-id/usb-radar, baudrate: 19200,
     timeout_s: 0.5}
  - {id: weir-line, type: serial_line, port: /dev/serial/by-id/usb-weir}
  - {id: gnss, type: nmea_gnss, port: /dev/serial/by-id/usb-gnss, baudrate: 115200}
devices:
  - id: piezo-1
    bus: rs485-1
    unit: 2
    poll_interval_s: 60
    points:
      - {id: freq, unit: Hz, register: {table: input, address: 100}, scale: 0.1}
  - id: radar-1
    bus: radar-line
    poll_interval_s: 60
    line: {command: "READ\\r\\n", pattern: 'LEVEL=(?P<level>[-+0-9.]+) TEMP=(?P<temp>\\S+)'}
    points:
      - {id: level, quantity: water_level, unit: m, field: level}
      - {id: temp, quantity: temperature, unit: degC, field: temp}
  - id: weir-1
    bus: weir-line
    poll_interval_s: 60
    line: {pattern: 'H=(?P<head>\\d+\\.\\d+)'}
    points:
      - {id: head, quantity: weir_head, unit: m, field: head}
  - id: gnss-1
    bus: gnss
    poll_interval_s: 600
    baseline: {lat_deg: 28.97, lon_deg: 118.87, height_m: 150.2, downstream_azimuth_deg: 120}
    points:
      - {id: downstream, quantity: displacement, unit: mm, field: downstream_mm}
      - {id: settlement, quantity: settlement, unit: mm, field: settlement_mm}
      - {id: fix, quantity: status, field: fix_quality}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def errors(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    return [str(p) for p in info.value.problems]


def test_serial_buses_load(tmp_path: Path) -> None:
    loaded = load_config(write(tmp_path, SITE))
    s = loaded.settings
    assert [b.type for b in s.buses] == ["modbus_rtu", "serial_line", "serial_line", "nmea_gnss"]
    radar = s.devices[1]
    assert radar.line is not None and radar.line.command == "READ\r\n"
    assert radar.line.groups == ["level", "temp"]
    assert s.devices[3].baseline is not None
    assert s.devices[3].baseline.required_fix_quality == (4,)
    assert loaded.warnings == ()


def test_line_point_must_name_a_group(tmp_path: Path) -> None:
    text = SITE.replace("field: temp}", "field: temperature}")
    assert errors(tmp_path, text) == [
        "site.yaml:24: devices[1].points[1].field: field 'temperature' is not a named group "
        "of the line pattern (groups: level, temp)"
    ]


def test_each_bus_type_demands_its_own_addressing(tmp_path: Path) -> None:
    text = SITE.replace("field: level}", "register: {table: holding, address: 0}}")
    text = text.replace(
        "{id: freq, unit: Hz, register: {table: input, address: 100},",
        "{id: freq, unit: Hz, field: freq,",
    )
    assert errors(tmp_path, text) == [
        "site.yaml:17: devices[0].points[0]: point piezo-1/freq on modbus_rtu bus 'rs485-1' "
        "needs 'register' (table, address, type)",
        "site.yaml:17: devices[0].points[0].field: 'field' is for serial_line and nmea_gnss "
        "points; on modbus_rtu use 'register'",
        "site.yaml:23: devices[1].points[0].register: 'register' is for Modbus points; on "
        "serial_line name the value with 'field'",
        "site.yaml:23: devices[1].points[0]: point radar-1/level on serial_line bus "
        "'radar-line' needs 'field' (one of: level, temp)",
    ]


def test_line_device_needs_a_line_and_a_valid_pattern(tmp_path: Path) -> None:
    missing = SITE.replace("    line: {pattern: 'H=(?P<head>\\d+\\.\\d+)'}\n", "")
    assert errors(tmp_path, missing) == [
        "site.yaml:25: devices[2]: device 'weir-1' on serial_line bus 'weir-line' needs "
        "'line' (a pattern with named groups, and a command unless it is free-running)"
    ]
    no_groups = SITE.replace("'H=(?P<head>\\d+\\.\\d+)'", "'H=(\\d+)'")
    assert errors(tmp_path, no_groups) == [
        "site.yaml:28: devices[2].line.pattern: pattern needs named groups, e.g. "
        "(?P<level>[-+0-9.]+), which points name with 'field'"
    ]
    broken = SITE.replace("'H=(?P<head>\\d+\\.\\d+)'", "'H=(?P<head>\\d+'")
    assert errors(tmp_path, broken)[0].startswith(
        "site.yaml:28: devices[2].line.pattern: pattern is not a valid regular expression"
    )


def test_free_running_instrument_and_gnss_receiver_own_their_port(tmp_path: Path) -> None:
    text = SITE.replace("    bus: radar-line\n", "    bus: weir-line\n")
    text = text.replace(
        "  - id: piezo-1\n",
        "  - id: gnss-2\n    bus: gnss\n"
        "    poll_interval_s: 600\n"
        "    baseline: {lat_deg: 28.9, lon_deg: 118.8, height_m: 150.0}\n"
        "    points: [{id: up, field: up_mm}]\n  - id: piezo-1\n",
    )
    assert errors(tmp_path, text) == [
        "site.yaml:31: devices[3].bus: device 'weir-1' shares serial_line bus 'weir-line' "
        "with 'radar-1'; a free-running instrument or GNSS receiver must be alone on its "
        "port",
        "site.yaml:37: devices[4].bus: device 'gnss-1' shares nmea_gnss bus 'gnss' with "
        "'gnss-2'; a free-running instrument or GNSS receiver must be alone on its port",
    ]


def test_gnss_fields_and_baseline(tmp_path: Path) -> None:
    text = SITE.replace("field: fix_quality}", "field: fix}")
    text = text.replace(", downstream_azimuth_deg: 120}", "}")
    assert errors(tmp_path, text) == [
        "site.yaml:36: devices[3].points[0].field: downstream_mm needs "
        "baseline.downstream_azimuth_deg (the dam's downstream direction)",
        "site.yaml:38: devices[3].points[2].field: field 'fix' is not a GNSS value (one of: "
        "east_mm, north_mm, up_mm, downstream_mm, axis_mm, settlement_mm, fix_quality, "
        "satellites, hdop)",
    ]
    on_modbus = SITE.replace(
        "    unit: 2\n", "    unit: 2\n    baseline: {lat_deg: 1, lon_deg: 2, height_m: 3}\n"
    )
    assert errors(tmp_path, on_modbus) == [
        "site.yaml:15: devices[0].baseline: 'baseline' is for devices on an nmea_gnss bus; "
        "bus 'rs485-1' is modbus_rtu"
    ]


def test_enumerated_usb_ports_are_warned_about(tmp_path: Path) -> None:
    text = SITE.replace("/dev/serial/by-id/usb-FTDI_FT232R-if00-port0", "/dev/ttyUSB0")
    text = text.replace("/dev/serial/by-id/usb-gnss", "/dev/ttyACM1")
    loaded = load_config(write(tmp_path, text))
    assert loaded.warnings == (
        "site.yaml:6: buses[0].port: /dev/ttyUSB0 may point to another adapter after a "
        "replug or reboot; use its /dev/serial/by-id/... name",
        "site.yaml:10: buses[3].port: /dev/ttyACM1 may point to another adapter after a "
        "replug or reboot; use its /dev/serial/by-id/... name",
    )
    result = run_edge(["check", "-c", str(tmp_path / "site.yaml")])
    assert result.returncode == 0, result.stderr
    assert "warnings: 2\n  site.yaml:6: buses[0].port: /dev/ttyUSB0 may point" in result.stdout
    assert "radar-line   serial_line /dev/serial/by-id/usb-radar 19200 8N1" in result.stdout
