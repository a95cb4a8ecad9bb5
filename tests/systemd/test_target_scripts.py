"""scripts/target/: the on-target check (root, nspawn, qemu; minutes) is not run by the suite,
but its scripts must parse, and the seq accounting its verdicts rest on must be right."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import pytest

TARGET = Path(__file__).resolve().parents[2] / "scripts" / "target"
SCRIPTS = sorted(TARGET.glob("*.sh"))
BASH = shutil.which("bash")
SHELLCHECK = shutil.which("shellcheck")


def load_broker_log():
    spec = importlib.util.spec_from_file_location("broker_log", TARGET / "broker_log.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(BASH is None, reason="bash is not installed")
@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_script_parses(script: Path) -> None:
    result = subprocess.run([BASH, "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(SHELLCHECK is None, reason="shellcheck is not installed")
def test_shellcheck_is_clean() -> None:
    # -x -P SCRIPTDIR: follow `source common.sh`, so variables set there count as set.
    result = subprocess.run([SHELLCHECK, "-x", "-P", "SCRIPTDIR", "-s", "bash",
                             *map(str, SCRIPTS)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_every_check_script_is_there() -> None:
    names = {s.name for s in SCRIPTS}
    assert {"common.sh", "rootfs.sh", "check.sh", "check_amd64.sh", "check_arm64.sh"} <= names


@pytest.mark.skipif(BASH is None, reason="bash is not installed")
def test_bash_n_catches_a_broken_script(tmp_path: Path) -> None:
    broken = tmp_path / "broken.sh"
    broken.write_text((TARGET / "check.sh").read_text().replace("esac", "", 1))
    assert subprocess.run([BASH, "-n", str(broken)], capture_output=True).returncode != 0


def line(kind: str, body: dict) -> str:
    return f"reservoir/target-check/gw-check/{kind} {json.dumps(body)}"


def telemetry(seq: int, ts: int = 1000, point: str = "water_level") -> str:
    reading = {"device": "level-1", "point": point, "ts": ts, "value": 1.0, "unit": "m",
               "quality": "good"}
    return line("telemetry", {"seq": seq, "readings": [reading]})


def test_seqs_over_all_topics_without_a_gap_and_duplicates_counted() -> None:
    summary = load_broker_log().summarise(
        [telemetry(1), line("alarms", {"seq": 2, "alarm": {}}), telemetry(3), telemetry(3),
         line("events", {"seq": 4, "event": {}}), "reservoir/x/y/telemetry {trunc"],
        0, None)
    assert summary["seq_min"] == "1" and summary["seq_max"] == "4"
    assert summary["seq_gaps"] == ""
    assert summary["duplicates"] == "1"


def test_a_missing_seq_is_reported_also_at_the_start() -> None:
    summary = load_broker_log().summarise([telemetry(2), telemetry(3), telemetry(6)], 0, None)
    assert summary["seq_gaps"] == "1,4,5"


def test_point_and_offline_only_count_after_since() -> None:
    module = load_broker_log()
    lines = [telemetry(1, ts=500, point="check_marker"), telemetry(2, ts=2000),
             line("status", {"state": "offline", "ts": 900, "version": "0.1.0"})]
    early = module.summarise(lines, 1000, "level-1/check_marker")
    assert early["point_seen"] == "no" and early["offline_ts"] == ""
    late = module.summarise(lines, 0, "level-1/check_marker")
    assert late["point_seen"] == "yes" and late["offline_ts"] == "900"
