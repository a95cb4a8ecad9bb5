"""The reservoir's shape: many small devices against the 10 × 100 reference, same run.

Cases (bench/_shape.py): 10 devices × 100 points at 1 s (the reference every other
figure in docs/performance.md was taken with), 10 devices × 10 points at 1 s (issue 19's
small site), 200 devices × 1 and × 10 points at 1 s and at 0.25 s (each device its own
Modbus TCP server and port, as the ThingsBoard comparison was fed), and 20 RS-485 slaves
× 2 registers on one 9600-baud line (a paced pty, simulator/serialwire.py). Points are
float32 (two registers) on TCP, uint16 on the RTU line. Every site also holds a level
gauge the bench steers, for the alarm latency, and a quality and a threshold rule per
device.

Each case runs the real daemon (``edge run``) against ``edge simulate`` and a private
Mosquitto on a free loopback port; figures are taken from the gateway process
(bench/_shape_run.py): CPU µs per datapoint and % of a core, disk bytes per datapoint
(/proc/PID/io write_bytes), telemetry messages (store commits) per second, RSS, and
alarm latency (register change -> alarm at the subscriber, p50 and p99 over all trials
of the case). Each figure is the median over --repeats runs; the
ratio is each run's figure over the same repeat's 10 × 100 figure, median over repeats.

Bounded: every wait has a timeout, the whole run ends after --max-minutes. Output goes
to $BENCH_DIR (or a temporary directory): the runs' work directories and results.json.

Usage: python bench/reservoir_shape.py [--quick] [--repeats 3] [--window 40]
       [--warmup 8] [--cases 10x100,200x10,...] [--simulators 2] [--alarm-window 20]
       [--synchronous full|normal] [--commit-window-ms MS]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from _common import machine, median, percentile, start_broker
from _shape import CASES, REFERENCE, Case
from _shape_run import Figures, measure

COLUMNS = ("cpu_us_per_datapoint", "disk_bytes_per_datapoint", "rss_mib")


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="one repeat, 4 s warm-up, 15 s window: for development")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--window", type=float, default=40.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=8.0,
                        help="seconds after the first reading before the window")
    parser.add_argument("--cases", default=",".join(c.key for c in CASES),
                        help="comma-separated; the 10x100 reference is always run")
    parser.add_argument("--simulators", type=int, default=2,
                        help="`edge simulate` processes sharing the TCP endpoints")
    parser.add_argument("--max-minutes", type=float, default=45.0,
                        help="stop starting new runs after this long")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--synchronous", choices=("full", "normal"), default="full",
                        help="the gateway's store.synchronous")
    parser.add_argument("--commit-window-ms", type=float, default=None,
                        help="the gateway's store.commit_window_ms (unset: its default)")
    parser.add_argument("--alarm-window", type=float, default=0.0,
                        help="seconds of alarm trials after a steady window (0: the trials "
                             "run inside the window, their commits counted with it)")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.warmup, args.window = 1, 4.0, 15.0
    return args


def store_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The gateway's store settings the command line chose (the rest as configured)."""
    chosen: dict[str, Any] = {"synchronous": args.synchronous}
    if args.commit_window_ms is not None:
        chosen["commit_window_ms"] = args.commit_window_ms
    return chosen


def chosen_cases(spec: str) -> list[Case]:
    known = {c.key: c for c in CASES}
    keys = [k.strip() for k in spec.split(",") if k.strip()]
    unknown = [k for k in keys if k not in known]
    if unknown:
        raise SystemExit(f"--cases: unknown {', '.join(unknown)}; known: {', '.join(known)}")
    return [REFERENCE, *(known[k] for k in keys if k != REFERENCE.key)]


def run_all(args: argparse.Namespace, cases: list[Case], out: Path) -> list[Figures]:
    rng = random.Random(args.seed)
    stop_at = time.monotonic() + args.max_minutes * 60
    results: list[Figures] = []
    broker = start_broker(out)
    try:
        for repeat in range(args.repeats):
            for case in cases:
                if time.monotonic() > stop_at:
                    print("--max-minutes reached: stopping early", file=sys.stderr)
                    return results
                print(f"repeat {repeat + 1}/{args.repeats}: {case.label} ...",
                      file=sys.stderr, flush=True)
                results.append(measure(case, repeat, out / f"{case.key}-{repeat}", broker,
                                       args.warmup, args.window, args.simulators, rng,
                                       store_settings(args), args.alarm_window))
    finally:
        broker.stop()
    return results


def ratios(results: list[Figures], case: str, column: str) -> list[float]:
    refs = {r.repeat: getattr(r, column) for r in results if r.case == REFERENCE.key}
    return [getattr(r, column) / refs[r.repeat] for r in results
            if r.case == case and refs.get(r.repeat)]


def report(args: argparse.Namespace, cases: list[Case], results: list[Figures]) -> None:
    print(f"machine: {machine()}")
    print(f"medians over {args.repeats} repeat(s), window {args.window:g} s after "
          f"{args.warmup:g} s warm-up; ratio = the case / the same repeat's 10 × 100")
    print("gateway store: " + ", ".join(f"{k} {v}" for k, v in store_settings(args).items()))
    if args.alarm_window:
        print(f"steady window: the alarm trials ran for {args.alarm_window:g} s after it")
    print(f"{'case':<26}{'points/s':>9}{'msg/s':>7}{'CPU %':>6}{'CPU µs/pt':>10}"
          f"{'×ref':>6}{'disk B/pt':>10}"
          f"{'×ref':>6}{'RSS MiB':>8}{'×ref':>6}{'alarm p50':>10}{'p99 ms':>8}{'n':>4}"
          f"{'bad':>5}{'other':>6}")
    for case in cases:
        runs = [r for r in results if r.case == case.key]
        if not runs:
            continue
        cells = []
        for column in COLUMNS:
            cells.append(median([getattr(r, column) for r in runs]))
            rel = ratios(results, case.key, column)
            cells.append(median(rel) if rel else float("nan"))
        lat = [x for r in runs for x in r.latencies_ms]
        print(f"{case.label:<26}{median([r.datapoints_per_s for r in runs]):>9.0f}"
              f"{median([r.messages_per_s for r in runs]):>7.2f}"
              f"{median([r.cpu_pct for r in runs]):>6.1f}"
              f"{cells[0]:>10.1f}{cells[1]:>6.2f}{cells[2]:>10.1f}{cells[3]:>6.2f}"
              f"{cells[4]:>8.1f}{cells[5]:>6.2f}{percentile(lat, 50):>10.0f}"
              f"{percentile(lat, 99):>8.0f}{len(lat):>4}{sum(r.bad for r in runs):>5}"
              f"{sum(r.other_alarms for r in runs):>6}")
    print("(points/s at the subscriber includes the level gauge; msg/s = telemetry "
          "messages at the subscriber, one per store commit with readings; CPU % of one "
          "core; alarm latency is over "
          "all trials of the case's repeats, n of them; bad = readings not good; other = "
          "alarm messages of the instruments' rules, none unless devices flap offline)")


def main() -> None:
    args = parse()
    cases = chosen_cases(args.cases)
    base = os.environ.get("BENCH_DIR")
    out = Path(tempfile.mkdtemp(prefix="bench-shape-", dir=base))
    results = run_all(args, cases, out)
    (out / "results.json").write_text(json.dumps([asdict(r) for r in results], indent=1))
    report(args, cases, results)
    print(f"runs and results.json in {out}")


if __name__ == "__main__":
    main()
