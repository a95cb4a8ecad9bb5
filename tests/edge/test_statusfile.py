"""The status file lives in systemd's runtime directory (tmpfs) when there is one, beside
the store otherwise, and `edge status` finds the one that belongs to its store."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from edge import statusfile
from edge.statusfile import STATUS_FILE, read_status, status_path, write_status_file
from tests.support import Broker, free_port, run_edge, site_config, start_edge, wait_for_port


@pytest.fixture
def store(tmp_path: Path) -> Path:
    (tmp_path / "state").mkdir()
    return tmp_path / "state" / "edge.db"


@pytest.fixture
def no_run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The conventional /run folder, moved where the test owns it (empty)."""
    folder = tmp_path / "conventional-run"
    monkeypatch.setattr(statusfile, "RUN_DIR", folder)
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    return folder


def test_without_a_runtime_directory_it_stays_beside_the_store(store: Path,
                                                               no_run_dir: Path) -> None:
    write_status_file(store, {"devices": []})
    assert status_path(store) == store.parent / STATUS_FILE
    written = json.loads((store.parent / STATUS_FILE).read_text())
    assert written["store_path"] == str(store.resolve()) and written["pid"] > 0
    assert read_status(store)["devices"] == []


def test_systemd_runtime_directory_takes_it_off_the_store_folder(
        store: Path, no_run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    run.mkdir()
    stale = store.parent / STATUS_FILE
    stale.write_text(json.dumps({"pid": 1, "devices": ["stale"]}))
    monkeypatch.setenv("RUNTIME_DIRECTORY", f"{run}:{tmp_path / 'second'}")
    write_status_file(store, {"devices": ["fresh"]})
    assert (run / STATUS_FILE).exists()
    assert not stale.exists(), "a file left beside the store by an earlier run is removed"
    assert read_status(store)["devices"] == ["fresh"]


def test_status_in_the_conventional_run_folder_is_found_from_a_shell(
        store: Path, no_run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    no_run_dir.mkdir()
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(no_run_dir))
    write_status_file(store, {"devices": ["daemon"]})
    monkeypatch.delenv("RUNTIME_DIRECTORY")  # the keeper's shell has no such variable
    assert read_status(store)["devices"] == ["daemon"]
    other = tmp_path / "other" / "edge.db"
    other.parent.mkdir()
    assert read_status(other) == {}, "another gateway's snapshot is never taken"
    (other.parent / STATUS_FILE).write_text(json.dumps({"devices": ["own"]}))
    assert read_status(other)["devices"] == ["own"]


def test_a_runtime_directory_that_is_missing_falls_back_to_the_store(
        store: Path, no_run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path / "never-created"))
    write_status_file(store, {"devices": []})
    assert (store.parent / STATUS_FILE).exists()


def test_unreadable_or_broken_files_read_as_no_status(store: Path, no_run_dir: Path) -> None:
    no_run_dir.mkdir()
    (no_run_dir / STATUS_FILE).write_text("{not json")
    (store.parent / STATUS_FILE).write_text("[1, 2]")  # JSON, but not a snapshot
    assert read_status(store) == {}


def test_daemon_under_a_runtime_directory_writes_nothing_beside_the_store(
        tmp_path: Path, private_broker: Broker) -> None:
    modbus_port = free_port()
    config = site_config(tmp_path, private_broker.port, modbus_port, interval=0.5)
    data = yaml.safe_load(config.read_text())
    data["health"] = {"interval_s": 1}
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    store = Path(data["store"]["path"])
    store.parent.mkdir(parents=True, exist_ok=True)
    (store.parent / STATUS_FILE).write_text(json.dumps({"pid": 1}))  # from an older run
    run = tmp_path / "run"
    run.mkdir()
    env = {"RUNTIME_DIRECTORY": str(run)}
    sim = start_edge(["simulate", "-c", str(config)], tmp_path / "sim.log")
    wait_for_port(modbus_port)
    gateway = start_edge(["run", "-c", str(config)], tmp_path / "gw.log", env=env)
    try:
        deadline = time.monotonic() + 20
        while not (run / STATUS_FILE).exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert (run / STATUS_FILE).exists(), gateway.output()[-2000:]
        assert not (store.parent / STATUS_FILE).exists()
        status = run_edge(["status", "-c", str(config)], env=env)
        assert status.returncode == 0, status.stderr
        assert f"running (pid {gateway.proc.pid})" in status.stdout
        assert "level-1          online" in status.stdout
    finally:
        gateway.stop()
        sim.kill()
    stopped = json.loads((run / STATUS_FILE).read_text())
    assert stopped["stopped"] is True and not (store.parent / STATUS_FILE).exists()
