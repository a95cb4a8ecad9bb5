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
