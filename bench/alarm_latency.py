"""Alarm latency: a register changes on a Modbus device -> the alarm at a subscriber.

The bench process itself runs a real pymodbus Modbus TCP server on 127.0.0.1 (one
device, unit 1, a float32 level in holding registers 0-1) whose value it can change at a
known instant; ``edge simulate`` cannot be steered while it runs, hence the in-process
server. The gateway (``edge run``) polls the device every --interval s (1 s) and has one
threshold rule on it (alarm above 150, no hysteresis, no delays); a private Mosquitto and
a subscriber on the alarms topic complete the path.

Each trial sets the level from 100 to 200 and measures, with time.monotonic() in this one
process, the time from the change to the ``raised`` message at the subscriber; then back
to 100 and the time to ``cleared``. Between changes it waits a random 2.5-3.5 s after the
previous message (so changes fall at every phase of the poll cycle, and fewer than 20
transitions a minute leave the gateway's alarm-storm limiter, 20 at once then 20 a minute,
out of the measurement). Each latency is split into the wait for the next poll (change ->
the server answering the first read with the new value) and the gateway + broker part
(that answer -> the message at the subscriber).

Target: p99 < poll interval + 50 ms.

Usage: python bench/alarm_latency.py [--trials 40] [--interval 1.0]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import struct
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from _common import (
    BenchBus,
    Subscriber,
    bench_site_config,
    free_port,
    machine,
    percentile,
    start_broker,
    start_edge,
    stop_all,
    wait_for_port,
)
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

if TYPE_CHECKING:
    from tests.support import EdgeProcess

GATEWAY_ID = "gw"
NORMAL, HIGH, LIMIT = 100.0, 200.0, 150.0


class LevelServer:
    """A Modbus TCP server on its own thread and event loop; ``set`` changes the level
    served from holding registers 0-1 and ``served_at`` tells when a read first saw it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._state = (NORMAL, 0)  # (value, generation): replaced whole, never mutated
        self._served: dict[int, float] = {}
        self.reads = 0
        self._loop = asyncio.new_event_loop()
        self._server: ModbusTcpServer | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="modbus-server", daemon=True)

    def start(self) -> None:
        self._thread.start()
        if not self._started.wait(10) or self._error is not None:
            raise RuntimeError(f"Modbus server did not start: {self._error}")
        wait_for_port(self.port)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as exc:
            self._error = exc
            self._started.set()
            return
        self._started.set()
        self._loop.run_forever()

    async def _serve(self) -> None:
        blocks = (
            [SimData(0, count=1, values=0, datatype=DataType.BITS)],
            [SimData(0, count=1, values=0, datatype=DataType.BITS)],
            [SimData(0, count=2, values=0, datatype=DataType.REGISTERS)],
            [SimData(0, count=1, values=0, datatype=DataType.REGISTERS)],
        )
        device = SimDevice(1, simdata=blocks, action=self._on_request)
        self._server = ModbusTcpServer([device], address=("127.0.0.1", self.port))
        await self._server.serve_forever(background=True)

    async def _on_request(self, function_code: int, start_address: int, address: int,
                          count: int, registers: list[int],
                          set_values: list[int] | list[bool] | None) -> ExcCodes | None:
        if function_code != 3 or set_values is not None:
            return None
        value, generation = self._state
        registers[0:2] = struct.unpack(">HH", struct.pack(">f", value))
        self.reads += 1
        self._served.setdefault(generation, time.monotonic())
        return None

    def set(self, value: float) -> tuple[int, float]:
        """Change the level now; returns its generation and the instant of the change."""
        generation = self._state[1] + 1
        changed = time.monotonic()
        self._state = (value, generation)
        return generation, changed

    def served_at(self, generation: int) -> float | None:
        return self._served.get(generation)

    def stop(self) -> None:
        if self._server is not None and self._loop.is_running():
            future = asyncio.run_coroutine_threadsafe(self._server.shutdown(), self._loop)
            try:
                future.result(5)
            except Exception as exc:  # the bench is ending: report, do not mask
                print(f"modbus server shutdown: {exc!r}", file=sys.stderr)
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


@dataclass
class Trial:
    state: str  # raised or cleared
    total_ms: float  # change -> message at the subscriber
    poll_wait_ms: float  # change -> first read that saw the new value
    gateway_ms: float  # that read -> message at the subscriber


def wait_alarm(sub: Subscriber, seen: int, state: str, timeout: float) -> tuple[float, int]:
    """Arrival time of the first alarm message with ``state`` after index ``seen``."""
    found: list[tuple[float, int]] = []

    def arrived(s: Subscriber) -> bool:
        for i in range(seen, len(s.arrivals)):
            a = s.arrivals[i]
            alarm = (a.body or {}).get("alarm") if a.topic.endswith("/alarms") else None
            if alarm and alarm.get("state") == state:
                found.append((a.at, i + 1))
                return True
        return False

    if not sub.wait_for(arrived, timeout):
        raise TimeoutError(f"no '{state}' alarm within {timeout} s")
    return found[0]


def stats(values: list[float]) -> str:
    return (f"p50 {percentile(values, 50):6.1f}  p90 {percentile(values, 90):6.1f}  "
            f"p99 {percentile(values, 99):6.1f}  max {max(values):6.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40, help="raise + clear pairs")
    parser.add_argument("--interval", type=float, default=1.0, help="poll interval, s")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    trials: list[Trial] = []
    with tempfile.TemporaryDirectory(prefix="bench-alarm-",
                                     dir=os.environ.get("BENCH_DIR")) as tmp:
        work = Path(tmp)
        broker = start_broker(work)
        server = LevelServer(free_port())
        gateway: EdgeProcess | None = None
        sub: Subscriber | None = None
        try:
            server.start()
            rule = {"id": "level-high", "type": "threshold", "point": "dev-000/p0",
                    "high": [{"severity": "alarm", "value": LIMIT}]}
            config = bench_site_config(work, broker.port, [BenchBus(server.port, [1])],
                                       interval=args.interval, rules=[rule],
                                       gateway_id=GATEWAY_ID)
            sub = Subscriber(broker.port, f"reservoir/bench/{GATEWAY_ID}/#",
                             keep=("/alarms",))
            gateway = start_edge(["run", "-c", str(config), "--log-level", "warning"],
                                 work / "gw.log")
            if not sub.wait_for(lambda s: s.readings > 0, 60):
                raise RuntimeError("no reading within 60 s:\n" + gateway.output()[-2000:])
            time.sleep(2 * args.interval)
            seen = len(sub.arrivals)
            for n in range(args.trials):
                for value, state in ((HIGH, "raised"), (NORMAL, "cleared")):
                    time.sleep(rng.uniform(2.5, 3.5))
                    generation, changed = server.set(value)
                    at, seen = wait_alarm(sub, seen, state, 10 + 3 * args.interval)
                    served = server.served_at(generation)
                    if served is None or served > at:
                        raise RuntimeError("the alarm came before the server served the value")
                    trials.append(Trial(state, (at - changed) * 1000,
                                        (served - changed) * 1000, (at - served) * 1000))
                print(f"trial {n + 1}/{args.trials}: raised {trials[-2].total_ms:.0f} ms, "
                      f"cleared {trials[-1].total_ms:.0f} ms", file=sys.stderr, flush=True)
            paced = "alarm_storm_paced" in gateway.output()
        finally:
            stop_all([gateway])
            if sub is not None:
                sub.close()
            server.stop()
            broker.stop()
    print(f"machine: {machine()}")
    print(f"one Modbus TCP device (pymodbus server in the bench process), poll interval "
          f"{args.interval:g} s, threshold rule at {LIMIT:g}; {args.trials} trials "
          f"(level {NORMAL:g} -> {HIGH:g} -> {NORMAL:g}), time.monotonic() in one process")
    target = args.interval * 1000 + 50
    for label, chosen in (("raised", [t for t in trials if t.state == "raised"]),
                          ("cleared", [t for t in trials if t.state == "cleared"]),
                          ("both", trials)):
        print(f"{label:>8} ({len(chosen)}): change -> alarm at subscriber: "
              f"{stats([t.total_ms for t in chosen])}")
    print(f"{'':>8} of which wait for the next poll:  {stats([t.poll_wait_ms for t in trials])}")
    print(f"{'':>8} and read -> alarm at subscriber:  {stats([t.gateway_ms for t in trials])}")
    p99 = percentile([t.total_ms for t in trials], 99)
    print(f"target p99 < interval + 50 ms = {target:.0f} ms: "
          f"{'met' if p99 < target else 'NOT met'} (p99 {p99:.1f} ms)")
    if paced:
        print("warning: the gateway logged alarm_storm_paced: some transitions were held "
              "back by the storm limiter and these latencies include that")


if __name__ == "__main__":
    main()
