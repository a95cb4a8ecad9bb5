"""What systemd sees of ``edge`` before the daemon runs: the console script, signals during
start-up, and configurations whose secrets the unit's environment lacks (issue 20, 1 and 3)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import yaml

from edge.statusfile import read_status
from tests.support import REPO, free_port, run_edge, site_config


def _with_password_env(tmp: Path, variable: str) -> tuple[Path, int]:
    """The test site with an MQTT password named by ``variable``; and that key's line."""
    path = site_config(tmp, free_port(), free_port())
    config = yaml.safe_load(path.read_text())
    config["mqtt"].update(username="gw-test", password_env=variable)
    text = yaml.safe_dump(config, sort_keys=False)
    path.write_text(text)
    line = next(n for n, t in enumerate(text.splitlines(), 1) if "password_env:" in t)
    return path, line


def _env_without(variable: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != variable}


def test_console_script_is_the_light_entry() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["edge"] == "edge.entry:main"


def test_check_reports_an_unset_password_variable_at_its_line(tmp_path: Path) -> None:
    path, line = _with_password_env(tmp_path, "EDGE_TEST_UNSET_PASSWORD")
    os.environ.pop("EDGE_TEST_UNSET_PASSWORD", None)
    result = run_edge(["check", "-c", str(path)])
    assert result.returncode == 2, result.stdout
    assert (f"site.yaml:{line}: mqtt.password_env: environment variable "
            "EDGE_TEST_UNSET_PASSWORD is not set") in result.stderr
    assert "/etc/reservoir-edge/env" in result.stderr


def test_check_accepts_the_password_variable_once_set(tmp_path: Path) -> None:
    path, _ = _with_password_env(tmp_path, "EDGE_TEST_SET_PASSWORD")
    env = {**os.environ, "PYTHONPATH": str(REPO), "EDGE_TEST_SET_PASSWORD": "secret"}
    result = subprocess.run([sys.executable, "-m", "edge", "check", "-c", str(path)],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "config OK" in result.stdout
    assert "secret" not in result.stdout + result.stderr


def test_run_with_an_unset_password_variable_fails_in_one_line(tmp_path: Path) -> None:
    path, line = _with_password_env(tmp_path, "EDGE_TEST_UNSET_PASSWORD")
    env = {**_env_without("EDGE_TEST_UNSET_PASSWORD"), "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-m", "edge", "run", "-c", str(path)],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr, result.stderr
    assert f"site.yaml:{line}: mqtt.password_env:" in result.stderr
    assert not (tmp_path / "edge.db").exists(), "the store was opened before the check"


def _blocked_opening_fifo(pid: int, timeout: float = 60.0) -> int | None:
    """The process, ``pid`` or a child of it (the configuration is built in a forked child,
    edge/daemon_config.py), once it waits in open(2) for a FIFO's writer (the kernel's
    wait_for_partner); None if none does within the timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            return None
        for candidate in (pid, *map(int, children)):
            try:
                if Path(f"/proc/{candidate}/wchan").read_text().strip() == "wait_for_partner":
                    return candidate
            except OSError:
                continue
        time.sleep(0.05)
    return None


def test_sigterm_during_start_up_exits_cleanly(tmp_path: Path) -> None:
    # The configuration is a FIFO nobody writes to: the daemon stays in start-up, blocked
    # reading its config, for as long as the test needs, which makes the moment certain.
    fifo = tmp_path / "site.yaml"
    os.mkfifo(fifo)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "edge", "run", "-c", str(fifo)], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        blocked = _blocked_opening_fifo(proc.pid)
        assert blocked is not None, "edge run never reached its config"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, (proc.returncode, err)
    assert "Traceback" not in err
    assert err.strip() == "edge: SIGTERM during start-up, exiting"
    assert not Path(f"/proc/{blocked}").exists(), "a process of the start-up was left behind"


# CPython can lose the SystemExit a signal handler raises while it compiles a module (the
# CI saw the stop printed and `edge run` then waiting for ever): these stand in for that
# loss, deterministically, by catching the exception where the compiler would have dropped it.
_LOST_STOP = """
import os, signal, sys
from edge.daemon_config import load_apart
from edge.early_stop import install_stop_handler

install_stop_handler()

def imports_that_lose_the_stop():
    try:
        os.kill(os.getpid(), signal.SIGTERM)
    except SystemExit:
        pass  # dropped, as CPython's compiler dropped it

try:
    load_apart(sys.argv[1], meanwhile=imports_that_lose_the_stop)
except SystemExit as stop:
    print("stopped", stop.code, flush=True)
    raise
print("went on", flush=True)
"""


def test_a_stop_lost_during_the_imports_still_ends_the_config_load(tmp_path: Path) -> None:
    fifo = tmp_path / "site.yaml"
    os.mkfifo(fifo)  # nobody writes: the config child waits for ever
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", _LOST_STOP, str(fifo)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            subprocess.run(["pkill", "-KILL", "-P", str(proc.pid)], check=False)
            proc.kill()
            proc.wait()
    assert (proc.returncode, out) == (0, "stopped 0\n"), err
    assert err.strip() == "edge: SIGTERM during start-up, exiting"


def test_a_stop_lost_before_the_loop_runs_stops_the_gateway_in_order(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from edge import early_stop
    from edge.config import load_config
    from edge.gateway import Gateway

    config = site_config(tmp_path, free_port(), free_port())
    monkeypatch.setattr(early_stop, "_requested", ["SIGTERM"])
    gateway = Gateway(load_config(config), config)
    # Without the check the gateway would run until the test's timeout.
    assert asyncio.run(asyncio.wait_for(gateway.run(), 60)) == 0
    assert read_status(tmp_path / "edge.db").get("stopped") is True, "the orderly stop ran"
