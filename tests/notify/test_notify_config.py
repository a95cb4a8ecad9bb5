"""The ``notify`` section: the contract's keys, and every check `edge check` makes of it."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from edge.config import ConfigError, load_config
from tests.support import run_edge

SITE = """\
site: {id: yangjiayuan, name: 杨家园水库, timezone: Asia/Shanghai}
gateway: {id: gw-01}
mqtt: {host: 127.0.0.1}
store: {path: /tmp/edge-notify-test.db}
buses:
  - {id: rs485-1, type: modbus_rtu, port: /dev/serial/by-id/usb-FTDI-if00-port0}
  - {id: gps, type: nmea_gnss, port: /dev/serial/by-id/usb-ublox-if00}
devices:
  - id: level-1
    bus: rs485-1
    unit: 1
    poll_interval_s: 10
    points:
      - {id: water_level, quantity: water_level, unit: m,
         register: {table: holding, address: 0, type: float32}}
  - id: keeper-box
    bus: rs485-1
    unit: 3
    poll_interval_s: 1
    points:
      - {id: ack, quantity: status, register: {table: discrete, address: 0}}
      - {id: battery, quantity: battery_voltage, unit: V,
         register: {table: input, address: 0, type: uint16}, scale: 0.01}
"""

NOTIFY = """\
notify:
  modem: {port: /dev/serial/by-id/usb-Quectel_EC25-if02-port0, baudrate: 115200}
  language: zh
  contacts:
    - {id: keeper, name: 王师傅, phone: "+8613800000001"}
    - {id: water-officer, phone: "+8613800000002"}
    - {id: grid-staff, phone: "+8613800000003"}
  escalation:
    - {after_min: 0, contacts: [keeper], min_severity: warning}
    - {after_min: 10, contacts: [water-officer], min_severity: alarm}
    - {after_min: 30, contacts: [grid-staff], min_severity: alarm}
  sirens:
    - {id: siren-1, bus: rs485-1, unit: 9, coil: 0, min_severity: alarm, on_s: 5, off_s: 5,
       max_s: 600}
  ack_button: {point: keeper-box/ack}
  point_names: {level-1/water_level: 库水位}
"""


def load(tmp_path: Path, notify: str = NOTIFY) -> list[str]:
    path = tmp_path / "site.yaml"
    path.write_text(SITE + textwrap.dedent(notify), encoding="utf-8")
    try:
        load_config(path)
    except ConfigError as exc:
        return [str(p) for p in exc.problems]
    return []


def test_the_contract_loads(tmp_path: Path) -> None:
    assert load(tmp_path) == []
    settings = load_config(tmp_path / "site.yaml").settings
    notify = settings.notify
    assert notify is not None and notify.modem is not None
    assert notify.modem.port.endswith("usb-Quectel_EC25-if02-port0")
    assert [t.after_min for t in notify.escalation] == [0, 10, 30]
    assert notify.contacts[0].label == "王师傅" and notify.contacts[1].label == "water-officer"
    assert notify.sirens[0].off_s == 5 and notify.pace_s == 60


def test_phone_numbers_must_be_e164(tmp_path: Path) -> None:
    found = load(tmp_path, NOTIFY.replace('"+8613800000002"', '"13800000002"')
                 .replace('"+8613800000003"', '"+86 138-0000-0003"'))
    assert found == [
        "site.yaml:29: notify.contacts[1].phone: '13800000002' is not an E.164 phone number: "
        "write + and the country code, then the number, e.g. +8613800000001 (at most 15 "
        "digits)"]


def test_spaces_and_dashes_are_dropped(tmp_path: Path) -> None:
    assert load(tmp_path, NOTIFY.replace('"+8613800000003"', '"+86 138-0000-0003"')) == []
    settings = load_config(tmp_path / "site.yaml").settings
    assert settings.notify is not None
    assert settings.notify.contacts[2].phone == "+8613800000003"


def test_references_to_contacts(tmp_path: Path) -> None:
    found = load(tmp_path, NOTIFY.replace("contacts: [water-officer]", "contacts: [officer]")
                 .replace("- {id: grid-staff, phone", "- {id: keeper, phone")
                 .replace('"+8613800000003"', '"+8613800000001"'))
    assert found == [
        "site.yaml:30: notify.contacts[2].id: duplicate contact id 'keeper' (also contacts[0])",
        "site.yaml:30: notify.contacts[2].phone: duplicate phone number '+8613800000001' "
        "(also contacts[0])",
        "site.yaml:33: notify.escalation[1].contacts[0]: unknown contact 'officer' (contacts: "
        "keeper, water-officer, keeper)",
        "site.yaml:34: notify.escalation[2].contacts[0]: unknown contact 'grid-staff' "
        "(contacts: keeper, water-officer, keeper)"]


def test_the_ladder_is_listed_in_order_and_needs_a_modem(tmp_path: Path) -> None:
    found = load(tmp_path, NOTIFY.replace("after_min: 30", "after_min: 5")
                 .replace("  modem: {port: /dev/serial/by-id/usb-Quectel_EC25-if02-port0, "
                          "baudrate: 115200}\n", ""))
    assert found == [
        "site.yaml:24: notify.modem: contacts and an escalation ladder need the SMS modem "
        "(notify.modem: {port: ...})",
        "site.yaml:33: notify.escalation[2].after_min: after_min 5 is before the tier above "
        "it (10): list the ladder in order"]


def test_sirens_need_a_modbus_bus_and_an_address_of_their_own(tmp_path: Path) -> None:
    sirens = """\
        - {id: siren-2, bus: rs485-9, unit: 9, coil: 1}
        - {id: siren-3, bus: gps, unit: 9, coil: 1}
        - {id: siren-4, bus: rs485-1, unit: 3, coil: 1}
        - {id: level-1, bus: rs485-1, unit: 9, coil: 0}
    """
    text = NOTIFY.replace("       max_s: 600}\n", "       max_s: 600}\n"
                          + textwrap.indent(textwrap.dedent(sirens), "    "))
    assert load(tmp_path, text) == [
        "site.yaml:38: notify.sirens[1].bus: siren 'siren-2' refers to bus 'rs485-9', which "
        "is not defined (buses: rs485-1, gps)",
        "site.yaml:39: notify.sirens[2].bus: siren 'siren-3' is on nmea_gnss bus 'gps'; "
        "relay modules need a Modbus bus (modbus_rtu or modbus_tcp)",
        "site.yaml:40: notify.sirens[3].unit: unit 3 on bus 'rs485-1' is also device "
        "'keeper-box': a relay module needs an address of its own",
        "site.yaml:41: notify.sirens[4].id: siren id 'level-1' is also a device id; its relay "
        "alarms would be taken for that device's",
        "site.yaml:41: notify.sirens[4].coil: coil 0 of unit 9 on bus 'rs485-1' is also "
        "sirens[0]"]


def test_the_button_and_the_point_names_refer_to_points(tmp_path: Path) -> None:
    found = load(tmp_path, NOTIFY.replace("keeper-box/ack", "keeper-box/battery")
                 .replace("{level-1/water_level: 库水位}", "{level-1/level: 库水位}"))
    assert found == [
        "site.yaml:39: notify.point_names.level-1/level: unknown point 'level-1/level'",
        "site.yaml:38: notify.ack_button.point: point 'keeper-box/battery' is not a digital "
        "input: use a register with table: discrete"]
    found = load(tmp_path, NOTIFY.replace("keeper-box/ack", "keeper-box/nothing"))
    assert found == ["site.yaml:38: notify.ack_button.point: unknown point "
                     "'keeper-box/nothing': the button is a point of a Modbus device (a "
                     "discrete input)"]


def test_the_modem_is_not_a_bus_and_values_are_checked(tmp_path: Path) -> None:
    found = load(tmp_path, NOTIFY.replace("usb-Quectel_EC25-if02-port0", "usb-FTDI-if00-port0")
                 .replace("on_s: 5", "on_s: 0.2").replace("language: zh", "language: fr"))
    assert found == [
        "site.yaml:26: notify.language: 'fr' is not one of zh or en",
        "site.yaml:36: notify.sirens[0].on_s: Input should be greater than or equal to 1, got "
        "0.2"]
    found = load(tmp_path, NOTIFY.replace("usb-Quectel_EC25-if02-port0", "usb-FTDI-if00-port0"))
    assert found == ["site.yaml:25: notify.modem.port: /dev/serial/by-id/usb-FTDI-if00-port0 is "
                     "also the port of bus 'rs485-1' (buses[0])"]


def test_edge_check_prints_the_section(tmp_path: Path) -> None:
    assert load(tmp_path) == []
    result = run_edge(["check", "-c", str(tmp_path / "site.yaml")])
    assert result.returncode == 0, result.stderr
    assert ("notify: 3 contacts, 3 tiers, 1 sirens, modem "
            "/dev/serial/by-id/usb-Quectel_EC25-if02-port0") in result.stdout


@pytest.mark.parametrize("after", ["0.25", "1", "0"])
def test_fractions_of_minutes(tmp_path: Path, after: str) -> None:
    assert load(tmp_path, NOTIFY.replace("after_min: 10", f"after_min: {after}")
                .replace("after_min: 30", "after_min: 31")) == []
