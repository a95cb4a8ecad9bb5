"""One run of one reservoir-shape case: the real daemon, its simulator, a private broker.

Measured over the window, all from the gateway process (``edge run``):

* CPU per datapoint: utime + stime from /proc/PID/stat over the readings that reached
  the subscriber in the window;
* disk bytes per datapoint: the growth of write_bytes in /proc/PID/io (what the kernel
  sent to the block device on the process's behalf) over the same readings;
* RSS (VmRSS) at the end of the window;
* telemetry messages per second at the subscriber: one per store commit (window) that
  held readings, so the commits per second that cost the disk its fsyncs;
* alarm latency: the bench changes the level gauge's register (its own pymodbus server)
  and times the ``raised`` / ``cleared`` message at the subscriber, with one
  time.monotonic() clock, trials following each other through the window.

A transition commits at once, and the polls of its round then commit apart: every trial
(one every ~3 s) adds a commit a real site makes a few times a day. With
``alarm_window`` > 0 the window is left steady, the trials run for that many seconds
after it, and only the latency is taken from them.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from _common import (
    BenchBus,
    Broker,
    Subscriber,
    free_port,
    proc_cpu_seconds,
    proc_memory_mib,
    start_edge,
    start_simulators,
    stop_all,
)
from _shape import LEVEL_RULE, RTU_LINE, Case, site_files, tcp_buses
from alarm_latency import HIGH, NORMAL, LevelServer, wait_alarm

if TYPE_CHECKING:
    from tests.support import EdgeProcess

ROOT = "reservoir/bench/gw"


@dataclass
class Figures:
    case: str
    repeat: int
    datapoints_per_s: float  # readings at the subscriber in the window, level gauge too
    messages_per_s: float  # telemetry messages in the window: one per commit window
    cpu_us_per_datapoint: float
    cpu_pct: float  # of one core
    disk_bytes_per_datapoint: float
    rss_mib: float
    bad: int  # readings in the window whose quality was not good
    other_alarms: int  # alarm messages of other rules than the level's: offline flapping
    latencies_ms: list[float] = field(default_factory=list)  # change -> alarm


def proc_write_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise RuntimeError(f"no write_bytes in /proc/{pid}/io")


def start_field(case: Case, work: Path, sim_config: Path, tcp_ports: list[BenchBus],
                simulators: int) -> list[EdgeProcess]:
    """The simulated devices: TCP endpoints dealt over ``simulators`` processes, or one
    process that opens the RS-485 line's pty."""
    if not case.rtu:
        return start_simulators(work, tcp_ports, simulators)
    sim = start_edge(["simulate", "-c", str(sim_config), "--log-level", "warning"],
                     work / "sim.log")
    deadline = time.monotonic() + 30
    while not (work / RTU_LINE).exists():
        if time.monotonic() > deadline or sim.proc.poll() is not None:
            stop_all([sim])
            raise RuntimeError(f"simulator did not open the line: {sim.output()[-2000:]}")
        time.sleep(0.05)
    return [sim]


def alarm_trials(server: LevelServer, sub: Subscriber, until: float, interval: float,
                 rng: random.Random) -> list[float]:
    """Raise and clear the level alarm until ``until``; change -> arrival, in ms."""
    latencies: list[float] = []
    with sub.cond:
        seen = len(sub.arrivals)
    timeout = 10 + 3 * interval
    while time.monotonic() + 3.5 < until:  # a pair may overrun: the window then grows
        for value, state in ((HIGH, "raised"), (NORMAL, "cleared")):
            # A random phase against the poll cycle; fewer than 20 transitions a minute
            # keep the storm limiter out of the measurement.
            time.sleep(rng.uniform(2.5, 3.5))
            _, changed = server.set(value)
            at, seen = wait_alarm(sub, seen, state, timeout)
            latencies.append((at - changed) * 1000)
    return latencies


def measure(case: Case, repeat: int, work: Path, broker: Broker, warmup: float,
            window: float, simulators: int, rng: random.Random,
            store: Mapping[str, Any] | None = None, alarm_window: float = 0.0) -> Figures:
    work.mkdir(parents=True)
    server = LevelServer(free_port())
    tcp = [] if case.rtu else tcp_buses(case, rng)
    config, sim_config = site_files(case, work, broker.port, server.port, tcp, store)
    sims: list[EdgeProcess] = []
    gateway: EdgeProcess | None = None
    sub: Subscriber | None = None
    try:
        server.start()
        sims = start_field(case, work, sim_config, tcp, simulators)
        sub = Subscriber(broker.port, f"{ROOT}/#", keep=("/alarms",))
        gateway = start_edge(["run", "-c", str(config), "--log-level", "warning"],
                             work / "gw.log")
        if not sub.wait_for(lambda s: s.readings > 0, 60):
            raise RuntimeError(f"no reading within 60 s; see {work / 'gw.log'}")
        time.sleep(warmup)
        pid = gateway.proc.pid
        cpu0, bytes0, t0 = proc_cpu_seconds(pid), proc_write_bytes(pid), time.monotonic()
        latencies = [] if alarm_window else alarm_trials(server, sub, t0 + window,
                                                          case.interval, rng)
        time.sleep(max(0.0, t0 + window - time.monotonic()))
        cpu1, bytes1, t1 = proc_cpu_seconds(pid), proc_write_bytes(pid), time.monotonic()
        rss = proc_memory_mib(pid)["rss"]
        if alarm_window:
            latencies = alarm_trials(server, sub, t1 + alarm_window, case.interval, rng)
        if gateway.proc.poll() is not None:
            raise RuntimeError(f"gateway exited; see {work / 'gw.log'}")
    finally:
        stop_all([gateway, *sims])
        if sub is not None:
            sub.close()
        server.stop()
    with sub.cond:
        arrived = [a for a in sub.arrivals if t0 <= a.at < t1 and a.readings]
    datapoints = max(1, sum(a.readings for a in arrived))
    with sub.cond:
        others = sum(1 for a in sub.arrivals if a.topic.endswith("/alarms")
                     and ((a.body or {}).get("alarm") or {}).get("rule") != LEVEL_RULE)
    return Figures(case.key, repeat, datapoints / (t1 - t0), len(arrived) / (t1 - t0),
                   (cpu1 - cpu0) / datapoints * 1e6, (cpu1 - cpu0) / (t1 - t0) * 100,
                   (bytes1 - bytes0) / datapoints, rss, sum(a.bad for a in arrived),
                   others, latencies)
