"""systemd/install.sh, run for real into a temporary root (--prefix) and as a dry run.

The installer gets a stand-in source tree: a project named reservoir-edge whose ``edge check``
refuses any config containing ``broken: true`` and logs each call, built by an in-tree PEP 517
backend so pip needs neither the network nor setuptools. The real unit file is copied in. The
venv is made with the interpreter running the tests (PYTHON=sys.executable), because Debian's
/usr/bin/python3 may lack ensurepip on a build machine.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INSTALL_SH = REPO / "systemd" / "install.sh"
BASH = shutil.which("bash")
pytestmark = pytest.mark.skipif(BASH is None, reason="bash is not installed")

EXAMPLE_CONFIG = "site:\n  name: example reservoir\n"

FAKE_BACKEND = '''
"""Minimal PEP 517 backend: a wheel holding fakeedge.py and the `edge` console script."""
import base64, hashlib, pathlib, zipfile

NAME, VERSION = "reservoir_edge", "0.0.0"
DIST = f"{NAME}-{VERSION}.dist-info"
FILES = {
    "fakeedge.py": pathlib.Path(__file__).with_name("fakeedge.py").read_text(),
    f"{DIST}/METADATA": f"Metadata-Version: 2.1\\nName: reservoir-edge\\nVersion: {VERSION}\\n",
    f"{DIST}/WHEEL": "Wheel-Version: 1.0\\nGenerator: fake\\nRoot-Is-Purelib: true\\n"
    "Tag: py3-none-any\\n",
    f"{DIST}/entry_points.txt": "[console_scripts]\\nedge = fakeedge:main\\n",
}

def get_requires_for_build_wheel(config_settings=None):
    return []

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    name = f"{NAME}-{VERSION}-py3-none-any.whl"
    record = []
    with zipfile.ZipFile(pathlib.Path(wheel_directory) / name, "w") as whl:
        for path, text in FILES.items():
            data = text.encode()
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            record.append(f"{path},sha256={digest.decode()},{len(data)}")
            whl.writestr(path, data)
        record.append(f"{DIST}/RECORD,,")
        whl.writestr(f"{DIST}/RECORD", "\\n".join(record) + "\\n")
    return name
'''

FAKE_EDGE = '''
"""Stand-in for `edge check -c PATH`: refuses configs containing 'broken: true'."""
import os, pathlib, sys

def main():
    args = sys.argv[1:]
    with open(os.environ["FAKE_EDGE_LOG"], "a") as log:
        secret = os.environ.get("EDGE_MQTT_PASSWORD", "<unset>")
        log.write(" ".join(args) + f" EDGE_MQTT_PASSWORD={secret}\\n")
    if args[:2] != ["check", "-c"] or len(args) != 3:
        sys.exit(f"unexpected arguments {args}")
    target = pathlib.Path(args[2])
    files = sorted(target.glob("*.yaml")) if target.is_dir() else [target]
    if not files:
        sys.exit("no configuration found")
    for f in files:
        if "broken: true" in f.read_text():
            sys.exit(f"{f}: invalid configuration")
        # The real check's words for a password variable the environment lacks.
        for number, line in enumerate(f.read_text().splitlines(), 1):
            name = line.partition("password_env:")[2].strip()
            if name and name not in os.environ:
                sys.exit(f"{f.name}:{number}: mqtt.password_env: environment variable "
                         f"{name} is not set; put {name}=<the broker password> in "
                         "/etc/reservoir-edge/env (read by systemd at start)")
    print("configuration ok")
'''


@pytest.fixture(scope="module")
def source_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src")
    (src / "pyproject.toml").write_text(
        textwrap.dedent(
            """\
            [build-system]
            requires = []
            build-backend = "fake_backend"
            backend-path = ["."]

            [project]
            name = "reservoir-edge"
            version = "0.0.0"
            """
        )
    )
    (src / "fake_backend.py").write_text(FAKE_BACKEND)
    (src / "fakeedge.py").write_text(FAKE_EDGE)
    (src / "config").mkdir()
    (src / "config" / "example-site.yaml").write_text(EXAMPLE_CONFIG)
    (src / "systemd").mkdir()
    shutil.copy(REPO / "systemd" / "reservoir-edge.service", src / "systemd")
    return src


def run_installer(
    *args: str | Path, log: Path, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    assert BASH is not None
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "PYTHON": sys.executable,
        "FAKE_EDGE_LOG": str(log),
        # Belt and braces: nothing in these tests may reach a package index.
        "PIP_NO_INDEX": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        # Keep pip's wheel cache out of the invoking user's home.
        "PIP_CACHE_DIR": str(log.parent / "pip-cache"),
        "LC_ALL": "C",
        **(extra_env or {}),
    }
    return subprocess.run(
        [BASH, str(INSTALL_SH), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def snapshot(root: Path) -> dict[str, tuple[int, bytes | str]]:
    """Mode and content (or link target) of everything outside the venv, which pip rewrites."""
    venv = root / "opt" / "reservoir-edge" / "venv"
    state: dict[str, tuple[int, bytes | str]] = {}
    for path in sorted(root.rglob("*")):
        if path == venv or venv in path.parents:
            continue
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            state[str(path.relative_to(root))] = (st.st_mode, os.readlink(path))
        elif stat.S_ISDIR(st.st_mode):
            state[str(path.relative_to(root))] = (st.st_mode, "")
        else:
            state[str(path.relative_to(root))] = (st.st_mode, path.read_bytes())
    return state


def test_prefix_install_then_rerun_keeps_config_and_is_idempotent(
    source_tree: Path, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    log = tmp_path / "edge-calls.log"
    conf = root / "etc" / "reservoir-edge"

    first = run_installer("--prefix", root, source_tree, log=log)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "skipping user creation" in first.stdout
    assert "skipping systemctl" in first.stdout

    assert (conf / "site.yaml").read_text() == EXAMPLE_CONFIG
    assert stat.S_IMODE((conf / "site.yaml").stat().st_mode) == 0o640
    assert stat.S_IMODE((conf / "env").stat().st_mode) == 0o640
    assert stat.S_IMODE(conf.stat().st_mode) == 0o750
    assert stat.S_IMODE((root / "var" / "lib" / "reservoir-edge").stat().st_mode) == 0o750
    unit = root / "etc" / "systemd" / "system" / "reservoir-edge.service"
    assert unit.read_bytes() == (REPO / "systemd" / "reservoir-edge.service").read_bytes()
    edge = root / "opt" / "reservoir-edge" / "venv" / "bin" / "edge"
    assert os.access(edge, os.X_OK)
    # The check ran through the installed console script against the installed config.
    assert log.read_text().splitlines() == [f"check -c {conf} EDGE_MQTT_PASSWORD=<unset>"]

    # A technician configures the site; a later upgrade must leave that alone.
    site_config = "site:\n  name: Lower Dam\nbuses: []\n"
    (conf / "site.yaml").write_text(site_config)
    (conf / "env").write_text("EDGE_MQTT_PASSWORD='s3cret-value'\n")
    before = snapshot(root)

    second = run_installer("--prefix", root, source_tree, log=log)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "keeping existing config" in second.stdout
    assert "reusing" in second.stdout
    assert "is up to date" in second.stdout
    assert snapshot(root) == before
    assert (conf / "site.yaml").read_text() == site_config
    # The env file reaches the check unquoted, as systemd would pass it, and its value never
    # reaches the installer's output.
    assert log.read_text().splitlines()[-1] == f"check -c {conf} EDGE_MQTT_PASSWORD=s3cret-value"
    assert "s3cret-value" not in second.stdout + second.stderr


def test_any_yaml_counts_as_existing_config(source_tree: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    conf = root / "etc" / "reservoir-edge"
    conf.mkdir(parents=True)
    (conf / "lower-dam.yaml").write_text("site:\n  name: Lower Dam\n")
    proc = run_installer("--prefix", root, source_tree, log=tmp_path / "log")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(p.name for p in conf.iterdir()) == ["env", "lower-dam.yaml"]


def test_broken_config_is_refused_and_left_untouched(source_tree: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    conf = root / "etc" / "reservoir-edge"
    conf.mkdir(parents=True)
    broken = "site:\n  name: Lower Dam\nbroken: true\n"
    (conf / "site.yaml").write_text(broken)
    proc = run_installer("--prefix", root, source_tree, log=tmp_path / "log")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "refused the configuration" in proc.stderr
    assert "NOT starting" in proc.stderr
    assert (conf / "site.yaml").read_text() == broken


def test_unset_password_variable_is_named_and_nothing_started(
    source_tree: Path, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    conf = root / "etc" / "reservoir-edge"
    conf.mkdir(parents=True)
    (conf / "site.yaml").write_text("mqtt:\n  password_env: EDGE_MQTT_PASSWORD\n")
    proc = run_installer("--prefix", root, source_tree, log=tmp_path / "log")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "NOT starting" in proc.stderr
    assert f"{conf / 'env'} does not set. Add:\n    EDGE_MQTT_PASSWORD=<value>\n" in proc.stderr

    # Filled in as told, the same installer accepts it and says nothing about variables.
    (conf / "env").write_text("EDGE_MQTT_PASSWORD=s3cret\n")
    again = run_installer("--prefix", root, source_tree, log=tmp_path / "log")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "<value>" not in again.stderr


def test_world_readable_env_file_is_tightened_not_rewritten(
    source_tree: Path, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    conf = root / "etc" / "reservoir-edge"
    conf.mkdir(parents=True)
    env_file = conf / "env"
    env_file.write_text("EDGE_MQTT_PASSWORD=hunter2\n")
    env_file.chmod(0o644)
    proc = run_installer("--prefix", root, source_tree, log=tmp_path / "log")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o640
    assert env_file.read_text() == "EDGE_MQTT_PASSWORD=hunter2\n"


def test_venv_from_another_python_is_rebuilt(source_tree: Path, tmp_path: Path) -> None:
    """After an OS upgrade moves python3 to a new minor version the old venv is dead."""
    root = tmp_path / "root"
    venv_bin = root / "opt" / "reservoir-edge" / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    stale = venv_bin / "python"
    stale.write_text("#!/bin/sh\necho 3.9\n")
    stale.chmod(0o755)
    (venv_bin / "stale-marker").write_text("")
    proc = run_installer("--prefix", root, source_tree, log=tmp_path / "log")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "venv is Python 3.9" in proc.stdout
    assert not (venv_bin / "stale-marker").exists()
    assert os.access(venv_bin / "edge", os.X_OK)


def test_dry_run_into_prefix_writes_nothing(source_tree: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    log = tmp_path / "log"
    proc = run_installer("--dry-run", "--prefix", root, source_tree, log=log)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert list(root.iterdir()) == []
    assert not log.exists(), "dry run must not execute edge check"
    out = proc.stdout
    assert f"-m venv {root}/opt/reservoir-edge/venv" in out
    assert "pip install --disable-pip-version-check --upgrade" in out
    assert f"{root}/etc/reservoir-edge/site.yaml" in out
    assert "Dry run: nothing was changed" in out


def _shim_dir(tmp_path: Path, record: Path) -> Path:
    """Commands that would change the machine, replaced by loggers that fail the test if run."""
    shims = tmp_path / "shims"
    shims.mkdir()
    mutating = [
        "useradd",
        "usermod",
        "groupadd",
        "systemctl",
        "install",
        "apt-get",
        "chmod",
        "chown",
        "rm",
        "runuser",
        "ln",
        "cp",
        "mkdir",
    ]
    for name in mutating:
        script = shims / name
        script.write_text(f'#!/bin/sh\necho "{name} $*" >> "{record}"\nexit 97\n')
        script.chmod(0o755)
    # Read-only probes the dry run may make, answered as on a fresh, unsynchronised gateway.
    probes = {
        "getent": "exit 2",
        "timedatectl": "echo no",
    }
    for name, body in probes.items():
        script = shims / name
        script.write_text(f"#!/bin/sh\n{body}\n")
        script.chmod(0o755)
    return shims


def test_dry_run_on_the_real_root_prints_the_plan_and_runs_nothing(
    source_tree: Path, tmp_path: Path
) -> None:
    installed = [p for p in ("/etc/reservoir-edge", "/opt/reservoir-edge") if Path(p).exists()]
    if installed:
        pytest.skip(f"this machine has a reservoir-edge install ({installed}); the plan differs")
    record = tmp_path / "mutations.log"
    shims = _shim_dir(tmp_path, record)
    path = f"{shims}:{os.environ.get('PATH', '/usr/bin:/bin')}"
    proc = run_installer("--dry-run", source_tree, log=tmp_path / "log", extra_env={"PATH": path})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not record.exists(), record.read_text()

    lines = proc.stdout.splitlines()
    planned = [line[2:] for line in lines if line.startswith("+ ")]

    def index(prefix: str) -> int:
        matches = [i for i, cmd in enumerate(planned) if cmd.startswith(prefix)]
        assert matches, f"{prefix!r} not planned in:\n" + "\n".join(planned)
        return matches[0]

    useradd = planned[index("useradd ")]
    for flag in (
        "--system",
        "--user-group",
        "--groups dialout",
        "--shell /usr/sbin/nologin",
        "--home-dir /var/lib/reservoir-edge",
        "--no-create-home",
    ):
        assert flag in useradd, useradd
    assert useradd.endswith(" reservoir-edge")
    assert index("install -o root -g reservoir-edge -d -m 0750 /etc/reservoir-edge") >= 0
    assert index("install -o root -g reservoir-edge -m 0640 ") >= 0
    assert (
        "/etc/reservoir-edge/site.yaml"
        in planned[index("install -o root -g reservoir-edge -m 0640 ")]
    )
    assert index("install -o root -g root -m 0644 ") < index("systemctl daemon-reload")
    assert index("systemctl daemon-reload") < index("systemctl enable reservoir-edge.service")
    check = index(
        "(cd / && env <0 variables from /etc/reservoir-edge/env> runuser -u reservoir-edge"
    )
    assert "/opt/reservoir-edge/venv/bin/edge check -c /etc/reservoir-edge" in planned[check]
    assert check < index("systemctl restart reservoir-edge.service")
    assert "NTPSynchronized=no" in proc.stderr


def test_rejects_python_older_than_3_11(source_tree: Path, tmp_path: Path) -> None:
    old_python = tmp_path / "python3.9"
    old_python.write_text("#!/bin/sh\necho 3.9\n")
    old_python.chmod(0o755)
    proc = run_installer(
        "--prefix",
        tmp_path / "root",
        source_tree,
        log=tmp_path / "log",
        extra_env={"PYTHON": str(old_python)},
    )
    assert proc.returncode == 1
    assert "needs >= 3.11" in proc.stderr
    assert not (tmp_path / "root").exists()


def test_rejects_a_directory_that_is_not_a_source_tree(tmp_path: Path) -> None:
    proc = run_installer("--prefix", tmp_path / "root", tmp_path, log=tmp_path / "log")
    assert proc.returncode == 1
    assert "source tree" in proc.stderr


def test_destdir_is_a_prefix(source_tree: Path, tmp_path: Path) -> None:
    root = tmp_path / "destdir"
    proc = run_installer(
        "--dry-run", source_tree, log=tmp_path / "log", extra_env={"DESTDIR": str(root)}
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"prefix mode: installing under {root}" in proc.stdout
    assert "useradd" not in proc.stdout
