"""The daemon's configuration is built in a forked child (edge/daemon_config.load_apart),
and a reload's in a process of its own (``load_for_reload``): same settings and same
errors as loading it in place, without the parse's memory peak or its validators."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge import daemon_config
from edge.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]


def site_file(tmp_path: Path, devices: int, extra: str = "") -> Path:
    config = {
        "site": {"id": "peak"}, "gateway": {"id": "gw"},
        "mqtt": {"host": "127.0.0.1", "port": 1},
        "store": {"path": str(tmp_path / "s.db")},
        "buses": [{"id": "lan", "type": "modbus_tcp", "host": "127.0.0.1", "port": 1502}],
        "devices": [{"id": f"pz-{n}", "bus": "lan", "unit": n % 247 + 1,
                     "poll_interval_s": 60,
                     "points": [{"id": "head", "quantity": "seepage_pressure", "unit": "kPa",
                                 "register": {"table": "holding", "address": 0,
                                              "type": "float32"}}]}
                    for n in range(devices)],
    }
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False) + extra, encoding="utf-8")
    return path


# Run in a fresh interpreter: one thread, so load_apart forks (pytest's may have more).
PROBE = """
import json, sys, tracemalloc
from edge import daemon_config
from edge.config import ConfigError, load_config
path, how = sys.argv[1], sys.argv[2]
if how == "child-dies":
    daemon_config._report_and_exit = lambda path, fd: daemon_config.os._exit(1)
load = {"in-place": load_config, "apart": daemon_config.load_apart,
        "reload": daemon_config.load_for_reload}.get(how, daemon_config.load_apart)
tracemalloc.start()
try:
    loaded = load(path)
    answer = {"digest": loaded.digest, "devices": len(loaded.settings.devices)}
except ConfigError as exc:
    answer = {"problems": [str(p) for p in exc.problems]}
answer["peak"] = tracemalloc.get_traced_memory()[1]
from pydantic._internal._mock_val_ser import MockValSer
from edge.config import GatewaySettings
answer["validator_built"] = not isinstance(GatewaySettings.__pydantic_validator__, MockValSer)
print(json.dumps(answer))
"""


def probe(path: Path, how: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-c", PROBE, str(path), how], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=True)
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def test_the_same_settings_without_the_parse_peak(tmp_path: Path) -> None:
    path = site_file(tmp_path, 200)
    in_place, apart = probe(path, "in-place"), probe(path, "apart")
    assert apart["digest"] == in_place["digest"] and apart["devices"] == 200
    # The parse's short-lived objects stay in the child: the parent only unpickles.
    assert apart["peak"] * 3 < in_place["peak"], (apart["peak"], in_place["peak"])


def test_the_same_errors_with_file_and_line(tmp_path: Path) -> None:
    path = site_file(tmp_path, 3, extra="bogus: 1\n")
    in_place, apart = probe(path, "in-place"), probe(path, "apart")
    assert apart["problems"] == in_place["problems"]
    assert any("site.yaml:" in p and "bogus" in p for p in apart["problems"])


def test_a_child_that_dies_is_replaced_by_loading_in_place(tmp_path: Path) -> None:
    path = site_file(tmp_path, 5)
    assert probe(path, "child-dies")["digest"] == probe(path, "in-place")["digest"]


def test_a_reload_parses_in_a_process_of_its_own(tmp_path: Path) -> None:
    path = site_file(tmp_path, 200)
    in_place, reload = probe(path, "in-place"), probe(path, "reload")
    assert reload["digest"] == in_place["digest"] and reload["devices"] == 200
    # Built here, the validators of every model and the parse's peak stayed in the
    # daemon for good after its first reload (docs/performance.md).
    assert in_place["validator_built"] and not reload["validator_built"]
    assert reload["peak"] * 3 < in_place["peak"], (reload["peak"], in_place["peak"])


def test_a_reload_gives_the_same_errors_with_file_and_line(tmp_path: Path) -> None:
    path = site_file(tmp_path, 3, extra="bogus: 1\n")
    assert probe(path, "reload")["problems"] == probe(path, "in-place")["problems"]


def test_a_reload_of_a_file_that_never_ends_is_refused_in_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fifo = tmp_path / "site.yaml"
    os.mkfifo(fifo)  # opened for reading, it waits for a writer that never comes
    monkeypatch.setattr(daemon_config, "RELOAD_LOAD_TIMEOUT_S", 2.0)
    with pytest.raises(ConfigError) as refused:
        daemon_config.load_for_reload(fifo)
    assert str(refused.value) == (f"{fifo}: reading the configuration took over 2 s; "
                                  "the running one stays")


def test_a_reload_keeps_the_running_object_of_each_entry_that_did_not_change(
        tmp_path: Path) -> None:
    path = site_file(tmp_path, 20)
    running = load_config(path)
    site = yaml.safe_load(path.read_text())
    site["devices"][5]["poll_interval_s"] = 30
    site["devices"][7]["id"] = "pz-new"
    path.write_text(yaml.safe_dump(site, sort_keys=False), encoding="utf-8")

    reloaded = daemon_config.load_for_reload(path, running)
    fresh = load_config(path)
    assert reloaded.digest == fresh.digest and reloaded.settings == fresh.settings
    assert reloaded.entry_digests == fresh.entry_digests
    kept = [n for n, (new, old) in enumerate(zip(reloaded.settings.devices,
                                                 running.settings.devices, strict=True))
            if new is old]
    assert kept == [n for n in range(20) if n not in (5, 7)]
    assert reloaded.settings.buses[0] is running.settings.buses[0]
    assert reloaded.settings.devices[5].poll_interval_s == 30
    assert reloaded.settings.devices[7].id == "pz-new"


# The reload's process with a load that prints to stdout on the way (as structlog does
# where nothing configured it): the answer must stay readable.
NOISY_CHILD = """
import runpy, sys
import edge.config
real = edge.config.load_config
edge.config.load_config = lambda path: (print("a log line on stdout"), real(path))[1]
sys.argv = ["edge.daemon_config", sys.argv[1]]
runpy.run_module("edge.daemon_config", run_name="__main__")
"""


def test_what_the_reload_s_process_prints_does_not_spoil_its_answer(tmp_path: Path) -> None:
    path = site_file(tmp_path, 3)
    done = subprocess.run([sys.executable, "-c", NOISY_CHILD, str(path)], cwd=ROOT,
                          input=b"", capture_output=True, timeout=120, check=True)
    outcome, loaded = pickle.loads(done.stdout)
    assert outcome == "ok" and loaded.digest == load_config(path).digest
    assert b"a log line on stdout" in done.stderr


def test_a_reload_tells_derived_points_of_the_same_id_apart_by_their_device(
        tmp_path: Path) -> None:
    path = site_file(tmp_path, 2)
    site = yaml.safe_load(path.read_text())
    site["derived"] = [{"id": "head_sum", "device": device, "expression": expression,
                        "unit": "kPa"}
                       for device, expression in (("dam-a", "{pz-0/head} + 1"),
                                                  ("dam-b", "{pz-1/head} + 1"))]
    path.write_text(yaml.safe_dump(site, sort_keys=False), encoding="utf-8")
    running = load_config(path)
    site["derived"][1]["expression"] = "{pz-1/head} + 2"
    path.write_text(yaml.safe_dump(site, sort_keys=False), encoding="utf-8")

    reloaded = daemon_config.load_for_reload(path, running)
    assert reloaded.settings == load_config(path).settings
    kept, changed = reloaded.settings.derived
    assert kept is running.settings.derived[0]
    assert changed is not running.settings.derived[1]
    assert changed.expression == "{pz-1/head} + 2"
