"""Backlog drain after an outage that buffered 500,000 readings.

Fills a gateway store as a long outage would (one telemetry message per device poll of
10 points: 50,000 messages), then starts the gateway against a private Mosquitto with a
subscriber attached and a live device polled every second, and measures:

* readings/s delivered to the subscriber while the backlog drains (median of 1-s windows);
* time until the whole backlog has arrived, and until live data is current again (the
  first live message published after the start arrived, and it did not wait behind the
  backlog).

Usage: python bench/backlog_drain.py [--readings 500000]
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import yaml
from _common import Broker, Recorder, free_port, machine, median, start_edge, wait_for_port

from edge.store import Store
from vocab.model import Reading

POINTS_PER_MESSAGE = 10


def fill(db: Path, readings: int) -> int:
    store = Store(db, "normal")
    start = int(time.time() * 1000) - readings // POINTS_PER_MESSAGE * 1000
    messages = readings // POINTS_PER_MESSAGE
    for i in range(messages):
        ts = start + i * 1000
        batch = [Reading("logger-1", f"p{j}", ts, 100.0 + j + i * 1e-3, "m", "good", 1.0)
                 for j in range(POINTS_PER_MESSAGE)]
        store.commit_cycle(batch, [])
    last = store.last_seq
    store.close()
    # Make the whole backlog look old enough to be replayed.
    conn = sqlite3.connect(db)
    conn.execute("UPDATE outbox SET created_ms = created_ms - 3600000")
    conn.commit()
    conn.close()
    return last


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--readings", type=int, default=500_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-drain-"))
    broker = Broker(work)
    broker.start()
    modbus_port = free_port()
    config = {
        "site": {"id": "bench", "levels": {}}, "gateway": {"id": "gw"},
        "mqtt": {"host": "127.0.0.1", "port": broker.port},
        "store": {"path": str(work / "edge.db"), "synchronous": "normal"},
        "buses": [{"id": "lan", "type": "modbus_tcp", "host": "127.0.0.1",
                   "port": modbus_port}],
        "devices": [{"id": "level-1", "bus": "lan", "unit": 1, "poll_interval_s": 1,
                     "points": [{"id": "water_level", "quantity": "water_level", "unit": "m",
                                 "register": {"table": "holding", "address": 0,
                                              "type": "float32"}}]}],
    }
    path = work / "site.yaml"
    path.write_text(yaml.safe_dump(config))
    t0 = time.monotonic()
    backlog_last = fill(work / "edge.db", args.readings)
    print(f"filled {args.readings} readings in {backlog_last} messages "
          f"({time.monotonic() - t0:.1f} s)", file=sys.stderr)
    sim = start_edge(["simulate", "-c", str(path)], work / "sim.log")
    wait_for_port(modbus_port)
    rec = Recorder(broker.port, "reservoir/bench/gw/telemetry")
    arrivals: list[float] = []
    first_live: list[float] = []
    backlog_seen = 0
    start = time.monotonic()
    gateway = start_edge(["run", "-c", str(path), "--log-level", "warning"], work / "gw.log")
    try:
        done_at = None
        while time.monotonic() - start < 600:
            time.sleep(0.05)
            with rec._cond:
                new = rec.messages[len(arrivals):]
                now = time.monotonic()
                for _, body, _ in new:
                    arrivals.append(now)
                    if body["seq"] <= backlog_last:
                        backlog_seen += 1
                    elif not first_live:
                        first_live.append(now)
            if backlog_seen >= backlog_last and done_at is None:
                done_at = time.monotonic()
                break
    finally:
        gateway.stop()
        sim.kill()
        rec.close()
        broker.stop()
    if done_at is None:
        print("backlog did not drain within 600 s", file=sys.stderr)
        sys.exit(1)
    drain_s = done_at - start
    per_second: dict[int, int] = {}
    for t in arrivals:
        per_second[int(t - start)] = per_second.get(int(t - start), 0) + POINTS_PER_MESSAGE
    steady = [v for k, v in sorted(per_second.items())[1:-1]] or list(per_second.values())
    print(f"machine: {machine()}")
    print(f"backlog: {args.readings} readings in {backlog_last} messages "
          f"({POINTS_PER_MESSAGE} readings per message)")
    print(f"drain time (gateway start -> last backlog message received): {drain_s:.1f} s")
    print(f"delivered readings/s, median of 1-s windows: {median(steady):.0f}")
    if first_live:
        print(f"first live reading received {first_live[0] - start:.2f} s after start "
              f"(live data current while the backlog drains)")


if __name__ == "__main__":
    main()
