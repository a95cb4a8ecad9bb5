"""The daemon imports the rule and bus types and the optional sections its site uses, and no
YAML parser.

The type tables (rules/registry.py, drivers/registry.py) name modules; the site file is
parsed and validated in another process (edge/daemon_config.py), and unpickling its
settings imports the modules of the types they hold. Checked in a fresh interpreter, as
``edge run`` starts: the daemon's modules imported, then the configuration loaded.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from drivers.registry import BUS_MODULES, bus_type
from rules.registry import RULE_MODULES, rule_type

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys
import edge.cli, edge.gateway
from edge.daemon_config import load_apart, load_for_reload
loaded = (load_for_reload if sys.argv[2] == "reload" else load_apart)(sys.argv[1])
print(json.dumps({"rules": len(loaded.settings.rules), "modules": sorted(
    m for m in sys.modules if m.startswith(("rules.", "drivers.", "yaml")))}))
"""


# Sections few sites write: the parser and models behind them load only where one is used.
OPTIONAL_MODULES = {"drivers.calibration", "drivers.nmea", "rules.expression"}


def site(tmp_path: Path, **sections: object) -> Path:
    config: dict[str, object] = {
        "site": {"id": "lean"}, "gateway": {"id": "gw"},
        "mqtt": {"host": "127.0.0.1", "port": 1},
        "store": {"path": str(tmp_path / "s.db")},
        "buses": [{"id": "lan", "type": "modbus_tcp", "host": "127.0.0.1", "port": 1502}],
        "devices": [{"id": "pz-1", "bus": "lan", "unit": 1, "poll_interval_s": 60,
                     "points": [{"id": "head", "quantity": "seepage_pressure", "unit": "kPa",
                                 "register": {"table": "holding", "address": 0,
                                              "type": "float32"}}]}],
        "rules": [{"id": "high", "type": "threshold", "point": "pz-1/head",
                   "high": [{"severity": "warning", "value": 300}]}],
    }
    config.update(sections)
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def daemon_modules(path: Path, how: str) -> set[str]:
    done = subprocess.run([sys.executable, "-c", PROBE, str(path), how], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=True)
    answer = json.loads(done.stdout)
    assert answer["rules"] == 1
    return set(answer["modules"])


def test_the_daemon_imports_the_types_its_site_uses_and_no_others(tmp_path: Path) -> None:
    path = site(tmp_path)
    for how in ("start", "reload"):
        modules = daemon_modules(path, how)
        assert {"rules.threshold", "drivers.modbus"} <= modules, how
        unused = {m for m in RULE_MODULES.values() if m != "rules.threshold"} | {
            module for module, _ in BUS_MODULES.values() if module != "drivers.modbus"}
        assert not modules & unused, (how, modules & unused)
        assert not modules & OPTIONAL_MODULES, (how, modules & OPTIONAL_MODULES)
        assert not {m for m in modules if m.startswith("yaml")}, how


def test_a_calibrated_point_brings_its_module(tmp_path: Path) -> None:
    # A derived point's parser loads when the rule engine parses its expression, not with
    # the settings: the daemon's own tests with derived points (config/demo.yaml) run it.
    point = {"id": "head", "quantity": "seepage_pressure", "unit": "kPa",
             "register": {"table": "holding", "address": 0, "type": "float32"},
             "calibration": {"type": "linear", "a": 2.0, "b": 1.0}}
    devices = [{"id": "pz-1", "bus": "lan", "unit": 1, "poll_interval_s": 60,
                "points": [point]}]
    derived = [{"id": "twice", "expression": "2 * {pz-1/head}", "unit": "kPa"}]
    path = site(tmp_path, devices=devices, derived=derived)
    for how in ("start", "reload"):
        modules = daemon_modules(path, how)
        assert "drivers.calibration" in modules, how
        assert not modules & {"drivers.nmea", "rules.expression"}, how


def test_every_entry_of_the_tables_names_its_own_type() -> None:
    for name in RULE_MODULES:
        assert rule_type(name).name == name
    for name in BUS_MODULES:
        assert bus_type(name).name == name
