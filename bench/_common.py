"""Shared bits of the bench scripts: machine description, broker and process helpers."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import socket
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support import (  # noqa: E402
    Broker,
    EdgeProcess,
    Recorder,
    free_port,
    wait_for_port,
)
from tests.support import start_edge as _start_edge  # noqa: E402

# A gateway run by a bench gets what the systemd unit gives it: the unit's Environment=
# lines, and a runtime folder on tmpfs for its status file (RuntimeDirectory=,
# edge/statusfile.py), so the figures are the deployed daemon's. Without /dev/shm the
# status file stays beside the store (and counts).
RUNTIME_PARENT = Path("/dev/shm")
UNIT = REPO / "systemd" / "reservoir-edge.service"


def unit_environment() -> dict[str, str]:
    assignments = (line.partition("=")[2] for line in UNIT.read_text().splitlines()
                   if line.startswith("Environment="))
    return dict(a.split("=", 1) for a in assignments if "=" in a)


def start_edge(args: list[str], log: Path, env: dict[str, str] | None = None) -> EdgeProcess:
    if args[:1] == ["run"]:
        env = {**unit_environment(), **(env or {})}
        if RUNTIME_PARENT.is_dir() and "RUNTIME_DIRECTORY" not in env:
            import atexit
            import tempfile

            runtime = tempfile.mkdtemp(prefix="bench-edge-run-", dir=RUNTIME_PARENT)
            atexit.register(shutil.rmtree, runtime, ignore_errors=True)
            env["RUNTIME_DIRECTORY"] = runtime
    return _start_edge(args, log, env)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs ({cpu}), "
            f"Python {platform.python_version()}")


def median(values: list[float]) -> float:
    return statistics.median(values)


__all__ = ["Broker", "Recorder", "free_port", "machine", "median", "start_edge",
           "wait_for_port"]


if TYPE_CHECKING:
    from tests.support import EdgeProcess


# --- helpers of the end-to-end benches (throughput, memory, alarm_latency, startup) -------
# Added below the original helpers (and imports at the top); nothing else is changed.

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Quantities the simulator's reservoir model gives plausible, moving values for.
BENCH_QUANTITIES = ("water_level", "seepage_pressure", "piezometric_level", "seepage_flow",
                    "temperature", "displacement", "other")


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def proc_memory_mib(pid: int) -> dict[str, float]:
    """RSS (VmRSS), and PSS and USS (private clean + dirty) from smaps_rollup when the
    kernel has it (4.14+), in MiB; missing figures are NaN."""
    out = {"rss": float("nan"), "pss": float("nan"), "uss": float("nan")}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            out["rss"] = int(line.split()[1]) / 1024
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    except OSError:
        return out
    kib: dict[str, int] = {}
    for line in rollup:
        parts = line.split()
        if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
            kib[parts[0][:-1]] = int(parts[1])
    if "Pss" in kib:
        out["pss"] = kib["Pss"] / 1024
    if "Private_Clean" in kib and "Private_Dirty" in kib:
        out["uss"] = (kib["Private_Clean"] + kib["Private_Dirty"]) / 1024
    return out


def split_points(points: int, per_device: int = 100) -> list[int]:
    """Points per device: full devices of ``per_device`` points and the remainder."""
    sizes = [per_device] * (points // per_device)
    if points % per_device:
        sizes.append(points % per_device)
    return sizes


@dataclass
class BenchBus:
    """One Modbus TCP endpoint of a generated site and the point counts of its devices."""

    port: int
    devices: list[int]
    first_device: int = 0  # number of the bus's first device across the site


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports. Calling ``free_port`` in a loop can return a
    port twice (the kernel may hand a closed port out again): with 200 endpoints that was
    more likely than not, and a simulator then failed with "Could not start listen"."""
    with contextlib.ExitStack() as held:
        sockets = [held.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]


def plan_buses(points: int, per_device: int = 100, devices_per_bus: int = 10) -> list[BenchBus]:
    """Devices of ``per_device`` points, ``devices_per_bus`` of them per TCP endpoint."""
    sizes = split_points(points, per_device)
    starts = range(0, len(sizes), devices_per_bus)
    return [BenchBus(port, sizes[start:start + devices_per_bus], start)
            for port, start in zip(free_ports(len(starts)), starts, strict=True)]


def device_id(number: int) -> str:
    return f"dev-{number:03d}"


def bench_site_config(work: Path, broker_port: int, buses: Sequence[BenchBus], *,
                      interval: float = 1.0, rules: list[dict[str, Any]] | None = None,
                      gateway_id: str = "gw", name: str = "site",
                      store: Path | None = None, health_s: float = 60.0,
                      timeout_s: float = 1.0) -> Path:
    """A site YAML of Modbus TCP buses whose devices hold float32 points p0, p1, ... in
    holding registers 0, 2, ... (one device per unit id on its bus), as ``edge simulate``
    serves them; written to ``work/name.yaml``."""
    devices = []
    for bus_index, bus in enumerate(buses):
        for offset, count in enumerate(bus.devices):
            devices.append({
                "id": device_id(bus.first_device + offset), "bus": f"lan-{bus_index}",
                "unit": offset + 1, "poll_interval_s": interval,
                "points": [{"id": f"p{i}",
                            "quantity": BENCH_QUANTITIES[i % len(BENCH_QUANTITIES)],
                            "unit": "m",
                            "register": {"table": "holding", "address": 2 * i,
                                         "type": "float32"}} for i in range(count)]})
    config: dict[str, Any] = {
        "site": {"id": "bench", "levels": {"flood_limit": 123.5, "design_flood": 124.8}},
        "gateway": {"id": gateway_id},
        "mqtt": {"host": "127.0.0.1", "port": broker_port},
        "store": {"path": str(store or work / f"{name}.db")},
        "health": {"interval_s": health_s},
        "logging": {"level": "warning"},
        "buses": [{"id": f"lan-{i}", "type": "modbus_tcp", "host": "127.0.0.1",
                   "port": bus.port, "timeout_s": timeout_s} for i, bus in enumerate(buses)],
        "devices": devices,
        "rules": rules or [],
    }
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def start_simulators(work: Path, buses: Sequence[BenchBus], processes: int,
                     ready_timeout: float = 60.0) -> list[EdgeProcess]:
    """``edge simulate`` for the buses, dealt round robin over ``processes`` processes
    (each serves its own subset of the site); returns once every port listens."""
    groups = [list(buses[i::processes]) for i in range(min(processes, len(buses)))]
    sims = []
    try:
        for n, group in enumerate(groups):
            # The simulator serves every device of the file it is given: one file each.
            config = bench_site_config(work, 1, group, name=f"sim-{n}")
            sims.append(start_edge(["simulate", "-c", str(config), "--log-level", "warning"],
                                   work / f"sim-{n}.log"))
        for bus in buses:
            wait_for_port(bus.port, ready_timeout)
    except BaseException:
        stop_all(sims)
        raise
    return sims


def stop_all(processes: Sequence[EdgeProcess | None]) -> None:
    """SIGTERM (then SIGKILL) each process we started; never raises."""
    for p in processes:
        if p is None:
            continue
        try:
            p.stop(10)
        except Exception:  # cleanup must go on
            with contextlib.suppress(Exception):
                p.kill()


def tear_down(gateway: EdgeProcess | None, simulators: Sequence[EdgeProcess],
              subscriber: Subscriber | None, broker: Broker | None = None) -> None:
    """Stop what an end-to-end bench started, the gateway first (its last messages)."""
    stop_all([gateway])
    stop_all(simulators)
    if subscriber is not None:
        subscriber.close()
    if broker is not None:
        broker.stop()


def start_broker(work: Path) -> Broker:
    """A private Mosquitto on a free loopback port (never the system broker on 1883)."""
    if not (shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists()):
        raise SystemExit("mosquitto is not installed (apt-get install mosquitto)")
    broker = Broker(work)
    broker.start()
    return broker


@dataclass
class Arrival:
    at: float  # time.monotonic() when the message reached the subscriber
    topic: str
    readings: int  # readings in a telemetry message, 0 otherwise
    body: dict[str, Any] | None  # the parsed body, when the subscriber keeps bodies
    bad: int = 0  # readings whose quality is not "good" (a timeout, out of range, ...)
    age_ms: float = 0.0  # wall clock at arrival minus the oldest reading's ts


@dataclass
class Subscriber:
    """A platform-side MQTT client that stamps every message with time.monotonic() on
    arrival (paho's network thread) and counts telemetry readings. Bodies are parsed and
    kept only for topics ending in one of ``keep`` (a long run would hoard them)."""

    port: int
    topic: str
    keep: tuple[str, ...] = ()
    arrivals: list[Arrival] = field(default_factory=list)
    readings: int = 0
    cond: threading.Condition = field(default_factory=threading.Condition)

    def __post_init__(self) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=f"bench-sub-{time.time_ns()}")
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(self.topic, qos=1)
        self.client.on_subscribe = lambda c, u, mid, rc, p: subscribed.set()
        self.client.connect("127.0.0.1", self.port, keepalive=30)
        self.client.loop_start()
        if not subscribed.wait(10):
            self.close()
            raise TimeoutError(f"no SUBACK from 127.0.0.1:{self.port}")

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.monotonic()
        telemetry = msg.topic.endswith("/telemetry")
        kept = bool(self.keep) and msg.topic.endswith(self.keep)
        body: Any = None
        if telemetry or kept:
            try:
                body = json.loads(msg.payload)
            except ValueError:
                body = None
        count = bad = 0
        age_ms = 0.0
        if telemetry and isinstance(body, dict) and body.get("readings"):
            readings = body["readings"]
            count = len(readings)
            bad = sum(1 for r in readings if r.get("quality") != "good")
            age_ms = time.time() * 1000 - min(r["ts"] for r in readings)
        with self.cond:
            self.arrivals.append(Arrival(now, msg.topic, count, body if kept else None, bad,
                                         age_ms))
            self.readings += count
            self.cond.notify_all()

    def readings_between(self, start: float, end: float) -> int:
        with self.cond:
            return sum(a.readings for a in self.arrivals if start <= a.at < end)

    def wait_for(self, predicate: Callable[[Subscriber], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.cond.wait(min(remaining, 0.2))
        return True

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.loop_stop()
            self.client.disconnect()


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), nearest-rank: an observed value, never interpolated."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def least_squares_slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Slope of the least-squares line through (xs, ys); NaN with fewer than 2 points."""
    n = len(xs)
    if n < 2:
        return float("nan")
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return float("nan")
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
