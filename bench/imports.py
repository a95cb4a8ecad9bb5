"""Where the gateway's RSS goes: what each import costs, and the running daemon's total.

1. Alone: each dependency imported by itself in a fresh interpreter; RSS after the import
   minus the bare interpreter's (the figures docs/performance.md quotes).
2. ``edge run`` on a site configuration (default config/demo.yaml; its Modbus TCP buses
   served by ``edge simulate`` on loopback, serial ports moved to links in a temporary
   directory, a private Mosquitto, a temporary store): RSS --seconds after start, split
   into anonymous and file-backed pages, and every module it imported (recorded with
   PYTHONPROFILEIMPORTTIME, which costs the daemon no measurable memory). Modules the daemon must
   not load are named: numpy unless an HST rule fits its model from history,
   sqlite_utils, the simulator, pymodbus' server.
3. In the daemon's order: those same modules imported again in one fresh interpreter, in
   the order the daemon finished importing them, grouped by package (our own modules one
   by one); the RSS each group adds. A dependency shared by several groups is counted
   once, with the first to import it; the sum is the daemon's import cost, and the rest
   of its RSS is what running costs (threads, SQLite's cache, buffers).

Usage: python bench/imports.py [--config config/demo.yaml] [--seconds 10] [--min-mib 0.3]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from _common import REPO, Broker, free_port, machine, start_edge, wait_for_port

# (label, statement) imported alone; pydantic as the configuration imports it.
ALONE = [
    ("asyncio (loads ssl)", "import asyncio"),
    ("ssl", "import ssl"),
    ("pydantic", "from pydantic import BaseModel, Field"),
    ("structlog", "import structlog"),
    ("PyYAML", "import yaml"),
    ("numpy", "import numpy"),
    ("pymodbus client", "import pymodbus.client"),
    ("pyserial", "import serial"),
    ("paho-mqtt", "import paho.mqtt.client"),
    ("sqlite3", "import sqlite3"),
    ("sqlite-utils", "import sqlite_utils"),
]

# Modules `edge run` has no business loading, and why.
UNWANTED = {
    "numpy": "numpy (needed only to fit an HST model from history)",
    "sqlite_utils": "sqlite_utils (edge export only)",
    "simulator.reservoir": "the simulator (edge simulate only)",
    "simulator.faultplan": "fault plans (edge simulate only)",
    "pymodbus.server": "pymodbus' server (edge simulate only)",
}

# Runs in a fresh interpreter: prints RSS in KiB as JSON before and after imports.
_RSS = """
def _rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1])
"""

_ALONE_CHILD = _RSS + """
import sys
before = _rss()
exec(sys.argv[1])
print(before, _rss())
"""

_REPLAY_CHILD = _RSS + """
import importlib, json, sys
modules = json.load(sys.stdin)
out = [["", _rss()]]
for module in modules:
    if module in sys.modules:
        continue
    try:
        importlib.import_module(module)
    except Exception:  # a module that only imports in its own context
        continue
    out.append([module, _rss()])
print(json.dumps(out))
"""


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def alone() -> tuple[float, list[tuple[str, float]]]:
    rows = []
    bare = 0.0
    for label, statement in ALONE:
        proc = subprocess.run([sys.executable, "-c", _ALONE_CHILD, statement], cwd=REPO,
                              env=child_env(), capture_output=True, text=True)
        if proc.returncode != 0:
            rows.append((f"{label} (not importable)", float("nan")))
            continue
        before, after = (int(v) for v in proc.stdout.split())
        bare = before / 1024
        rows.append((label, (after - before) / 1024))
    return bare, rows


def memory_mib(pid: int) -> dict[str, float]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key = line.split(":", 1)[0]
        if key in ("VmRSS", "RssAnon", "RssFile", "Threads"):
            value = int(line.split()[1])
            out[key] = value if key == "Threads" else value / 1024
    return out


def loopback_site(source: Path, work: Path, broker_port: int) -> tuple[Path, list[int], dict]:
    """The site moved onto this machine: broker, Modbus TCP ports, serial links, store."""
    from edge.yamlsource import load_config_source

    config: dict[str, Any] = load_config_source(source).data  # a directory merged
    config["mqtt"].update(host="127.0.0.1", port=broker_port)
    config["mqtt"].pop("tls", None)
    env = {}
    if config["mqtt"].get("password_env"):
        env[config["mqtt"]["password_env"]] = "bench"
    config["store"]["path"] = str(work / "edge.db")
    tcp_ports = []
    for bus in config.get("buses") or []:
        if bus["type"] == "modbus_tcp":
            bus.update(host="127.0.0.1", port=free_port())
            tcp_ports.append(bus["port"])
        else:
            bus["port"] = str(work / f"tty-{bus['id']}")
    path = work / "site.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    from edge.config import ConfigError, load_config

    try:
        load_config(path)
    except ConfigError as exc:
        raise SystemExit("\n".join(str(p) for p in exc.problems)) from None
    return path, tcp_ports, env


def imported_modules(log: Path) -> list[str]:
    """Modules in the order their import finished, from PYTHONPROFILEIMPORTTIME lines."""
    modules = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("import time:") and "|" in line and "imported package" not in line:
            modules.append(line.rsplit("|", 1)[1].strip())
    return modules


def run_daemon(source: Path, seconds: float, work: Path) -> tuple[dict[str, float], list[str],
                                                                  bool]:
    broker = Broker(work)
    broker.start()
    sim = gateway = None
    try:
        site, tcp_ports, env = loopback_site(source, work, broker.port)
        data = yaml.safe_load(site.read_text())
        has_hst = any(rule.get("type") == "hst" and rule.get("fit") is not None
                      for rule in data.get("rules") or [])
        if data.get("buses"):
            sim = start_edge(["simulate", "-c", str(site), "--log-level", "warning"],
                             work / "sim.log")
            for port in tcp_ports:
                wait_for_port(port, 20)
        log = work / "gw.log"
        gateway = start_edge(["run", "-c", str(site), "--log-level", "warning"], log,
                             env={**env, "PYTHONPROFILEIMPORTTIME": "1"})
        time.sleep(seconds)
        if gateway.proc.poll() is not None:
            raise SystemExit(f"edge run stopped; see {log}")
        memory = memory_mib(gateway.proc.pid)
    finally:
        if gateway:
            gateway.stop()
        if sim:
            sim.stop()
        broker.stop()
    return memory, imported_modules(log), has_hst


def group_of(module: str) -> str:
    top = module.split(".")[0]
    return module if top in ("edge", "rules", "drivers") else top


def replay(modules: list[str]) -> tuple[float, list[tuple[str, int, float]]]:
    """RSS added by each group of the daemon's modules, imported in the daemon's order.

    The order is the one in which the daemon's imports finished, so each module finds
    the modules it needs already loaded and adds only its own cost (and that of anything
    it loads that the daemon loaded at the same moment).
    """
    wanted = [m for m in dict.fromkeys(modules) if "__main__" not in m]
    proc = subprocess.run([sys.executable, "-c", _REPLAY_CHILD], cwd=REPO, env=child_env(),
                          input=json.dumps(wanted), capture_output=True, text=True,
                          check=True)
    rows = json.loads(proc.stdout)
    added: dict[str, float] = {}
    for (_, before), (module, after) in itertools.pairwise(rows):
        added[group_of(module)] = added.get(group_of(module), 0.0) + (after - before) / 1024
    counts: dict[str, int] = {}
    for module in wanted:
        counts[group_of(module)] = counts.get(group_of(module), 0) + 1
    bare = rows[0][1] / 1024
    return bare, sorted(((name, counts[name], mib) for name, mib in added.items()),
                        key=lambda row: -row[2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "config" / "demo.yaml"),
                        help="site file or directory (default config/demo.yaml)")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="RSS is read this long after the gateway starts")
    parser.add_argument("--min-mib", type=float, default=0.3,
                        help="groups adding less are summed into one line")
    args = parser.parse_args()
    print(f"machine: {machine()}")

    bare, rows = alone()
    print(f"\n1. imported alone (bare interpreter {bare:.1f} MiB):")
    for label, mib in rows:
        print(f"  {label:<22} +{mib:5.1f} MiB")

    work = Path(tempfile.mkdtemp(prefix="bench-imports-"))
    memory, modules, has_hst = run_daemon(Path(args.config), args.seconds, work)
    print(f"\n2. edge run -c {args.config}, {args.seconds:g} s after start: "
          f"RSS {memory['VmRSS']:.1f} MiB (anonymous {memory['RssAnon']:.1f}, files "
          f"{memory['RssFile']:.1f}), {memory['Threads']:.0f} threads, "
          f"{len(set(modules))} modules imported")
    loaded = set(modules)
    unwanted = [why for name, why in UNWANTED.items()
                if name in loaded and not (name == "numpy" and has_hst)]
    print(f"  loaded but not needed: {', '.join(unwanted) if unwanted else 'none'}"
          + (" (numpy: an HST rule fits from history)" if "numpy" in loaded and has_hst
             else ""))

    start, groups = replay(modules)
    print(f"\n3. the daemon's modules imported in its order, by package, largest first "
          f"(bare interpreter {start:.1f} MiB):")
    small = small_count = 0
    total = 0.0
    for name, count, mib in groups:
        total += mib
        if mib >= args.min_mib:
            print(f"  {name:<30} +{mib:5.1f} MiB  ({count} module{'s' if count != 1 else ''})")
        else:
            small += mib
            small_count += count
    print(f"  {'everything else':<30} +{small:5.1f} MiB  ({small_count} modules)")
    print(f"  imports: {start + total:.1f} MiB; edge run: {memory['VmRSS']:.1f} MiB, of which "
          f"{memory['VmRSS'] - start - total:.1f} MiB beyond its imports")


if __name__ == "__main__":
    main()
