"""Soak: the gateway for --minutes (default 10) with every fault cycling, RSS sampled.

Not part of the test suite (it runs for minutes). All on 127.0.0.1, with a private
persistent Mosquitto and a persistent-session subscriber standing in for the platform:

* ``edge simulate`` serves an RS-485 line (level logger + piezometer reader, pseudo-
  terminals) and a Modbus TCP weir sensor; its fault plan repeats every minute: the
  piezometer goes silent, answers with CRC errors, with line noise, with exception
  responses, then the RS-485 adapter is unplugged and the TCP endpoint goes away;
* the broker is stopped for 8 s (an outage) and frozen with SIGSTOP for 6 s (a broker
  that never acknowledges) once a minute;
* with ``--kill-every N`` the gateway is SIGKILLed and restarted every N minutes, and the
  store's ``PRAGMA integrity_check`` is asked after each kill.

Every --sample-s seconds it prints the gateway's RSS (VmRSS and its parts: anonymous
memory is the heap, where a leak shows; file-backed memory grows with the SQLite file and
WAL index it maps) and outbox depth. At the end it prints the least-squares slopes of
both after the longest-lived gateway's first minute (flat is the goal), stops the gateway
cleanly and verifies through the public tools that nothing was lost: every reading
``edge export`` finds was delivered and the seqs received have no gap. Exit status 1 if
anything was lost or the store is damaged.

Usage: python bench/soak.py [--minutes 10] [--sample-s 10] [--kill-every 0]
       [--max-slope-mib-h 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.faults.harness import (  # noqa: E402
    ROOT,
    assert_everything_stored_was_delivered,
    integrity_check,
    received_seqs,
    start_simulator,
    status_file,
    wait_for_log,
)
from tests.support import (  # noqa: E402
    Broker,
    EdgeProcess,
    Recorder,
    free_port,
    site_config,
    start_edge,
)

CYCLE_S = 60
INTERVAL_S = 0.5


def device_faults(minutes: float) -> list[dict[str, Any]]:
    """One minute of field faults, repeated (seconds from the simulator's start)."""
    faults: list[dict[str, Any]] = []
    for cycle in range(int(minutes) + 1):
        t = cycle * CYCLE_S
        faults += [
            {"kind": "silent", "device": "piezo-1", "at_s": t + 5, "for_s": 5},
            {"kind": "crc_error", "device": "piezo-1", "at_s": t + 15, "for_s": 5},
            {"kind": "garbage", "device": "piezo-1", "at_s": t + 25, "for_s": 5},
            {"kind": "exception", "device": "piezo-1", "at_s": t + 35, "for_s": 3, "code": 4},
            {"kind": "disconnect", "bus": "rs485-1", "at_s": t + 45, "for_s": 5},
            {"kind": "disconnect", "bus": "lan", "at_s": t + 52, "for_s": 3},
        ]
    return faults


def write_site(work: Path, broker_port: int, modbus_port: int) -> Path:
    config = site_config(work, broker_port, modbus_port, interval=INTERVAL_S, rules=[])
    data: dict[str, Any] = yaml.safe_load(config.read_text())
    data["mqtt"].update({"reconnect_min_s": 0.5, "reconnect_max_s": 2.0})
    data["health"] = {"interval_s": 5}
    data["buses"].append({"id": "rs485-1", "type": "modbus_rtu",
                          "port": str(work / "by-id" / "rs485"), "baudrate": 38400,
                          "timeout_s": 0.25})
    level, piezo = data["devices"]
    level["bus"] = piezo["bus"] = "rs485-1"
    data["devices"].append(
        {"id": "weir-1", "bus": "lan", "unit": 3, "poll_interval_s": INTERVAL_S,
         "points": [{"id": "head", "quantity": "weir_head", "unit": "m", "scale": 0.001,
                     "register": {"table": "holding", "address": 4, "type": "uint16"}}]})
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    return config


def rss_mib(pid: int) -> dict[str, float]:
    """VmRSS and its parts in MiB: anonymous (the heap: where a leak shows), file-backed
    (libraries, the SQLite file and WAL index mapped in) and shared memory."""
    out = {"VmRSS": float("nan"), "RssAnon": float("nan"), "RssFile": float("nan"),
           "RssShmem": float("nan")}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in out:
            out[key] = int(value.split()[0]) / 1024
    return out


def slope_per_hour(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MiB) samples, in MiB per hour."""
    if len(samples) < 3:
        return 0.0
    xs, ys = zip(*samples, strict=True)
    return statistics.linear_regression(xs, ys).slope * 3600


class Soak:
    def __init__(self, work: Path, args: argparse.Namespace) -> None:
        self.work = work
        self.args = args
        self.broker = Broker(work, persistent=True)
        self.modbus_port = free_port()
        self.config = write_site(work, self.broker.port, self.modbus_port)
        self.gateway: EdgeProcess | None = None
        self.incarnation = 0
        self.kills = 0
        # (elapsed s, VmRSS MiB, RssAnon MiB, pid)
        self.samples: list[tuple[float, float, float, int]] = []
        self.broken_store: list[str] = []

    def start_gateway(self) -> None:
        self.incarnation += 1
        self.gateway = start_edge(["run", "-c", str(self.config)],
                                  self.work / f"gw-{self.incarnation}.log")
        wait_for_log(self.gateway, "gateway_started", 30)

    def kill_and_restart(self) -> None:
        assert self.gateway is not None
        self.gateway.kill()
        self.kills += 1
        verdict = integrity_check(self.work / "edge.db")
        if verdict != "ok":
            self.broken_store.append(verdict)
        print(f"  SIGKILL #{self.kills}: integrity_check {verdict}", flush=True)
        self.start_gateway()

    def outage(self) -> None:
        self.broker.stop()
        print("  broker stopped (outage)", flush=True)

    def restore(self) -> None:
        self.broker.start()
        print("  broker back", flush=True)

    def freeze(self) -> None:
        self.broker.freeze()
        print("  broker frozen (SIGSTOP)", flush=True)

    def thaw(self) -> None:
        self.broker.thaw()
        print("  broker thawed", flush=True)

    def schedule(self, minutes: float) -> list[tuple[float, str, Callable[[], None]]]:
        events: list[tuple[float, str, Callable[[], None]]] = []
        for cycle in range(int(minutes * 60 // CYCLE_S) + 1):
            t = cycle * CYCLE_S
            events += [(t + 20, "outage", self.outage), (t + 28, "restore", self.restore),
                       (t + 40, "freeze", self.freeze), (t + 46, "thaw", self.thaw)]
            if self.args.kill_every and cycle % self.args.kill_every == self.args.kill_every - 1:
                events.append((t + 58, "kill", self.kill_and_restart))
        return sorted((e for e in events if e[0] < minutes * 60), key=lambda e: e[0])

    def sample(self, elapsed: float, rec: Recorder) -> None:
        assert self.gateway is not None
        pid = self.gateway.proc.pid
        if self.gateway.proc.poll() is not None:
            raise SystemExit(f"the gateway died:\n{self.gateway.output()[-3000:]}")
        rss = rss_mib(pid)
        self.samples.append((elapsed, rss["VmRSS"], rss["RssAnon"], pid))
        # status.json is written every health interval even while the uplink is down.
        try:
            depth: Any = status_file(self.work)["outbox"]["depth"]
        except (OSError, ValueError, KeyError):
            depth = "-"
        print(f"{elapsed:7.0f} s  pid {pid:>7}  rss {rss['VmRSS']:7.2f} MiB (anon "
              f"{rss['RssAnon']:6.2f}, file {rss['RssFile']:6.2f}, shmem "
              f"{rss['RssShmem']:5.2f})  outbox {depth}", flush=True)

    def run(self) -> int:
        args = self.args
        plan = self.work / "faults.yaml"
        plan.write_text(yaml.safe_dump({"faults": device_faults(args.minutes)}))
        self.broker.start()
        sim = start_simulator(self.config, self.work / "sim.log", faults=plan,
                              ports=[self.modbus_port], links=[self.work / "by-id" / "rs485"])
        rec = Recorder(self.broker.port, f"{ROOT}/#", persistent=True)
        try:
            self.start_gateway()
            started = time.monotonic()
            events = self.schedule(args.minutes)
            next_sample = 0.0
            print(f"soak of {args.minutes} min, {len(events)} broker/process events, "
                  f"store {self.work / 'edge.db'}", flush=True)
            while (elapsed := time.monotonic() - started) < args.minutes * 60:
                while events and events[0][0] <= elapsed:
                    events.pop(0)[2]()
                if elapsed >= next_sample:
                    self.sample(elapsed, rec)
                    next_sample += args.sample_s
                time.sleep(0.2)
            return self.finish(rec, started)
        finally:
            if self.gateway is not None:
                self.gateway.kill()
            sim.kill()
            rec.close()
            self.broker.stop()

    def finish(self, rec: Recorder, started: float) -> int:
        assert self.gateway is not None
        if self.broker.proc is None:
            self.restore()
        else:
            self.broker.thaw()
        # Let the backlog of the last fault drain before the clean stop (its drain is
        # bounded at 5 s): wait for a fresh health report and every seq it counts.
        since = time.time_ns() // 1_000_000
        rec.wait_for(lambda r: any(h["ts"] > since for h in r.on("/health")), 60,
                     "a health message after the last fault")
        last = max(h["outbox"]["last_seq"] for h in rec.on("/health") if h["ts"] > since)
        rec.wait_for(lambda r: set(range(1, last + 1)) <= received_seqs(r), 120,
                     f"every seq up to {last}")
        code = self.gateway.stop()
        print(f"gateway stopped with status {code} after "
              f"{(time.monotonic() - started) / 60:.1f} min", flush=True)

        # The longest-lived gateway, after its first minute (imports, caches warming up).
        pids = [pid for *_, pid in self.samples]
        longest = max(set(pids), key=pids.count)
        born = min(t for t, *_, pid in self.samples if pid == longest)
        steady = [(t, rss, anon) for t, rss, anon, pid in self.samples
                  if pid == longest and t >= born + CYCLE_S]
        if len(steady) < 3 or steady[-1][0] - steady[0][0] < 3 * CYCLE_S:
            print(f"RSS: too short to judge (gateway pid {longest})")
        else:
            for name, index in (("VmRSS", 1), ("RssAnon", 2)):
                series = [(row[0], row[index]) for row in steady]
                slope = slope_per_hour(series)
                print(f"{name} of gateway pid {longest} after its first minute: "
                      f"{series[0][1]:.2f} -> {series[-1][1]:.2f} MiB, max "
                      f"{max(v for _, v in series):.2f}, slope {slope:+.2f} MiB/h")
            # Caches (SQLite's page cache above all, up to its cache_size per connection)
            # fill while the store grows: the second half of the run is what tells a
            # leak, which keeps climbing, from a cache that levels off.
            late = [(row[0], row[2]) for row in steady[len(steady) // 2:]]
            anon_slope = slope_per_hour(late)
            print(f"RssAnon slope over the second half: {anon_slope:+.2f} MiB/h: heap "
                  + ("flat" if anon_slope <= self.args.max_slope_mib_h else "GROWING"))
        failures = []
        if code != 0:
            failures.append(f"the gateway exited with {code}")
        verdict = integrity_check(self.work / "edge.db")
        if verdict != "ok" or self.broken_store:
            failures.append(f"integrity_check: {verdict}; after kills: {self.broken_store}")
        try:
            last_seq, stored = assert_everything_stored_was_delivered(
                self.config, self.work, rec)
            print(f"no loss: {stored} stored readings all delivered, seqs 1..{last_seq} "
                  f"without a gap ({self.kills} SIGKILLs)")
        except AssertionError as exc:
            failures.append(f"loss: {exc}")
        for failure in failures:
            print(f"FAILED: {failure}")
        return 1 if failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--sample-s", type=float, default=10.0,
                        help="seconds between RSS samples (default 10)")
    parser.add_argument("--kill-every", type=int, default=0, metavar="N",
                        help="SIGKILL and restart the gateway every N minutes (0: never)")
    parser.add_argument("--max-slope-mib-h", type=float, default=5.0,
                        help="heap (RssAnon) slope still called flat (default 5 MiB/h)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the working directory (store, logs) and print its path")
    args = parser.parse_args()
    if args.keep:
        work = Path(tempfile.mkdtemp(prefix="soak-"))
        print(f"working directory: {work}")
        return Soak(work, args).run()
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        return Soak(Path(tmp), args).run()


if __name__ == "__main__":
    sys.exit(main())
