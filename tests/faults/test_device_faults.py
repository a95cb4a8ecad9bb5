"""Field-side faults from the simulator's fault plan, seen through the whole gateway.

One RS-485 line carries a healthy level logger and a piezometer reader that goes through
every fault the field produces (no answer, CRC errors, line noise, exception responses,
then the USB adapter of the line is pulled); a Modbus TCP weir sensor sits on a bus of its
own. What the platform receives must show the faulty device bad with the right reason,
while the other devices keep their polling interval.
"""

from __future__ import annotations

import json
import statistics
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import yaml

from tests.faults.harness import ROOT, start_simulator, subscribe, wait_until, watch
from tests.support import Broker, Recorder, free_port, site_config, start_edge

INTERVAL_S = 0.5
RTU_TIMEOUT_S = 0.25
# What a loaded 2-core machine adds to a poll's due time (event loop, SQLite commits, the
# simulator and the broker sharing the cores).
TOLERANCE_S = 1.0
# Reading times this close to a fault's start or end may fall on either side of it: the
# simulator logs fault changes every 0.1 s and a reading is stamped before its request.
EDGE_S = 0.4

# Seconds from the simulator's start; the gateway is polling by about 2 s.
PLAN = [
    {"kind": "silent", "device": "piezo-1", "at_s": 4.0, "for_s": 2.5},
    {"kind": "crc_error", "device": "piezo-1", "at_s": 6.5, "for_s": 2.5},
    {"kind": "garbage", "device": "piezo-1", "at_s": 9.0, "for_s": 2.5},
    {"kind": "exception", "device": "piezo-1", "at_s": 11.5, "for_s": 2.0, "code": 4},
    {"kind": "disconnect", "bus": "rs485-1", "at_s": 13.5, "for_s": 2.5},
]
# The reason kinds (text before the first ':') each fault may leave on piezo-1's readings.
REASONS = {
    "silent": {"timeout"},
    "crc_error": {"crc_error"},
    # Random bytes may be taken for a damaged frame, or never form one at all.
    "garbage": {"garbled_response", "timeout", "crc_error"},
    "exception": {"exception_response"},
    "disconnect": {"io_error", "connect_failed"},
}


@dataclass(frozen=True)
class Window:
    kind: str
    start_ms: int
    end_ms: int

    def holds(self, ts: int, margin_ms: int = 0) -> bool:
        return self.start_ms + margin_ms <= ts <= self.end_ms - margin_ms


def fault_windows(sim_log: Path) -> list[Window]:
    """When each fault really was active, from the simulator's own log lines."""
    started: dict[str, int] = {}
    windows = []
    for line in sim_log.read_text().splitlines():
        if not line.startswith("{"):
            continue
        event = json.loads(line)
        at = int(datetime.fromisoformat(event["timestamp"]).timestamp() * 1000)
        if event.get("event") == "fault_started":
            started[event["kind"]] = at
        elif event.get("event") == "fault_ended":
            windows.append(Window(event["kind"], started.pop(event["kind"]), at))
    return windows


def device_config(tmp_path: Path, broker_port: int, modbus_port: int) -> Path:
    link = tmp_path / "by-id" / "rs485"
    config = site_config(tmp_path, broker_port, modbus_port, interval=INTERVAL_S, rules=[])
    data: dict[str, Any] = yaml.safe_load(config.read_text())
    data["health"] = {"interval_s": 1}
    data["buses"].append({"id": "rs485-1", "type": "modbus_rtu", "port": str(link),
                          "baudrate": 38400, "timeout_s": RTU_TIMEOUT_S})
    level, piezo = data["devices"]
    for device in (level, piezo):
        device["bus"] = "rs485-1"
    # Many failed polls in a row must not push the faulty device into its offline backoff
    # here: every fault window needs polls to look at.
    piezo["offline_after"] = 100
    data["devices"].append(
        {"id": "weir-1", "bus": "lan", "unit": 3, "poll_interval_s": INTERVAL_S,
         "points": [{"id": "head", "quantity": "weir_head", "unit": "m", "scale": 0.001,
                     "register": {"table": "holding", "address": 4, "type": "uint16"}}]})
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    return config


def readings_of(rec: Recorder, device: str) -> list[dict[str, Any]]:
    found = [r for m in rec.on("/telemetry") for r in m["readings"] if r["device"] == device]
    return sorted(found, key=lambda r: r["ts"])


def gaps_s(timestamps: list[int]) -> list[float]:
    return [(b - a) / 1000 for a, b in pairwise(timestamps)]


def kind(reason: str | None) -> str:
    return (reason or "").split(":", 1)[0]


def test_faulty_device_is_reported_bad_while_the_others_keep_their_interval(
        tmp_path: Path, broker: Broker, stack: ExitStack) -> None:
    """A piezometer reader that stops answering, answers with CRC errors, with line noise,
    with exception responses, and then loses its USB-RS485 adapter: its readings and its
    health say bad and why; the level logger on the same line is delayed by at most one
    timeout per cycle; the weir sensor on its own bus never notices (lessons.md: one dead
    device stalling a whole bus, ThingsBoard #164, Telegraf #11782)."""
    modbus_port = free_port()
    config = device_config(tmp_path, broker.port, modbus_port)
    plan = tmp_path / "faults.yaml"
    plan.write_text(yaml.safe_dump({"faults": PLAN}))
    sim_log = tmp_path / "sim.log"
    sim = watch(stack, start_simulator(config, sim_log, faults=plan, ports=[modbus_port],
                                       links=[tmp_path / "by-id" / "rs485"]))
    rec = subscribe(stack, broker.port, f"{ROOT}/#")
    gateway = watch(stack, start_edge(["run", "-c", str(config)], tmp_path / "gw.log"))

    wait_until(lambda: len(fault_windows(sim_log)) == len(PLAN) or sim.proc.poll() is not None,
               40, "the end of the fault plan")
    assert sim.proc.poll() is None, sim.output()[-3000:]
    ended_ms = fault_windows(sim_log)[-1].end_ms

    def recovered(r: Recorder) -> bool:
        latest = [x for x in readings_of(r, "piezo-1") if x["ts"] > ended_ms]
        return any(x["quality"] == "good" for x in latest) and any(
            x["quality"] == "good" for x in readings_of(r, "level-1") if x["ts"] > ended_ms)

    rec.wait_for(recovered, 20, "piezo-1 and level-1 good again after the faults")
    rec.wait_for(lambda r: any(h["ts"] > ended_ms + 2000 for h in r.on("/health")), 10,
                 "a health message after the recovery")
    assert gateway.stop() == 0, gateway.output()[-3000:]
    assert gateway.proc.returncode == 0

    windows = fault_windows(sim_log)
    assert [w.kind for w in windows] == [f["kind"] for f in PLAN], windows
    first_ms = min(r["ts"] for m in rec.on("/telemetry") for r in m["readings"])
    assert first_ms < windows[0].start_ms - 1000, "the gateway was polling before the faults"

    # The faulty device: bad with the fault's reason inside each window, good outside.
    piezo = readings_of(rec, "piezo-1")
    margin = int(EDGE_S * 1000)
    for window in windows:
        inside = [r for r in piezo if window.holds(r["ts"], margin)]
        assert len(inside) >= 2, (window, "too few polls to judge the fault")
        wrong = [r for r in inside if r["quality"] != "bad" or r["value"] is not None
                 or kind(r["reason"]) not in REASONS[window.kind]]
        assert not wrong, (window.kind, wrong)
    # The line is re-opened with a backoff once the adapter is back (0.5, 1, 2 ... s):
    # the first good reading of the level logger after the unplug says when it was.
    disconnect = windows[-1]
    level = readings_of(rec, "level-1")
    back_ms = min(r["ts"] for r in level
                  if r["ts"] > disconnect.start_ms and r["quality"] == "good")
    assert back_ms - disconnect.end_ms < 8000, "the line was re-opened within its backoff"
    clear = [r for r in piezo
             if (r["ts"] < disconnect.start_ms
                 and not any(w.holds(r["ts"], -2 * margin) for w in windows))
             or r["ts"] >= back_ms]
    assert clear and all(r["quality"] == "good" for r in clear), \
        [r for r in clear if r["quality"] != "good"]

    # The weir sensor on the other bus: always good, always on time.
    weir = readings_of(rec, "weir-1")
    assert weir and all(r["quality"] == "good" for r in weir)
    weir_gaps = gaps_s([r["ts"] for r in weir])
    assert max(weir_gaps) < INTERVAL_S + TOLERANCE_S, weir_gaps
    assert abs(statistics.median(weir_gaps) - INTERVAL_S) < 0.05, weir_gaps

    # The level logger shares the faulty line: good while only piezo-1 misbehaves, delayed
    # by at most one timeout per cycle. (While the adapter is unplugged it is bad too.)
    outside = [r for r in level
               if not disconnect.start_ms - margin <= r["ts"] < back_ms]
    assert all(r["quality"] == "good" for r in outside), \
        [r for r in outside if r["quality"] != "good"]
    unplugged = [r for r in level if disconnect.holds(r["ts"], margin)]
    assert unplugged and all(kind(r["reason"]) in REASONS["disconnect"] for r in unplugged)
    water = [r for r in level if r["point"] == "water_level"]
    level_gaps = [(b["ts"] - a["ts"]) / 1000 for a, b in pairwise(water)
                  if a["quality"] == b["quality"] == "good"]
    assert max(level_gaps) < INTERVAL_S + RTU_TIMEOUT_S + TOLERANCE_S, level_gaps
    assert abs(statistics.median(level_gaps) - INTERVAL_S) < 0.05, level_gaps

    # Health tells the same story: the fault kinds counted, the last error shown while it
    # lasted, and the device online again.
    health = rec.on("/health")
    # A snapshot taken in the fault's first poll interval and timeout may precede the
    # first failed poll.
    settled = INTERVAL_S + RTU_TIMEOUT_S + EDGE_S
    during = [d for h in health
              if windows[0].start_ms + settled * 1000 <= h["ts"] <= windows[0].end_ms
              for d in h["devices"] if d["device"] == "piezo-1"]
    assert during and all(d["last_error"] for d in during), during
    final = {d["device"]: d for d in health[-1]["devices"]}
    kinds = set(final["piezo-1"]["error_kinds"])
    assert {"timeout", "crc_error", "exception_response"} <= kinds, kinds
    assert kinds & REASONS["disconnect"], kinds
    assert final["piezo-1"]["online"] and final["level-1"]["online"]
    assert final["weir-1"]["errors"] == 0 and final["weir-1"]["online"]
    assert health[-1]["buses"]["rs485-1"]["reconnects"] >= 1
