"""The rule engine's cost per poll and per datapoint with the reservoir's shape, in process.

Builds each case's site (bench/_shape.py: a quality rule with an offline check and a
threshold rule per device, the level gauge and its alarm rule) and feeds the engine the
polls the daemon would, one device at a time in poll order, with timestamps advancing by
the case's interval; reports the median over --repeats of the CPU (time.process_time) per
datapoint and per poll, and the ratio to the 10 × 100 case. No daemon, no I/O: the part of
the per-poll cost that belongs to the rules.

Usage: python bench/_shape_engine.py [--rounds 200] [--repeats 5]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

from _common import machine, median
from _shape import CASES, LEVEL_DEVICE, LEVEL_POINT, REFERENCE, Case, site_files, tcp_buses

from edge.config import load_config
from rules.engine import RuleEngine
from vocab.model import Reading


def polls(case: Case, rounds: int) -> list[list[Reading]]:
    """Every device's poll, round after round, as the bus tasks hand them over."""
    out = []
    step = int(case.interval * 1000)
    for n in range(rounds):
        ts = 1_733_400_000_000 + n * step
        for d in range(case.devices):
            out.append([Reading(f"dev-{d:03d}", f"p{i}", ts + d, 100.0 + 0.01 * (n % 7),
                                "m", "good", 100.0) for i in range(case.points)])
        out.append([Reading(LEVEL_DEVICE, LEVEL_POINT, ts, 100.0, "m", "good", 100.0)])
    return out


def cost(case: Case, rounds: int, work: Path) -> tuple[float, float]:
    """(µs per datapoint, µs per poll) of feeding ``rounds`` rounds to a fresh engine."""
    tcp = [] if case.rtu else tcp_buses(case, random.Random(1))
    config, _ = site_files(case, work, 1883, 1502, tcp)
    engine = RuleEngine(load_config(config).settings.rule_site())
    batches = polls(case, rounds)
    start = time.process_time()
    for batch in batches:
        engine.evaluate(batch)
    spent = time.process_time() - start
    datapoints = sum(len(b) for b in batches)
    return spent / datapoints * 1e6, spent / len(batches) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200, help="polls of every device")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    figures: dict[str, list[tuple[float, float]]] = {c.key: [] for c in CASES}
    with tempfile.TemporaryDirectory(prefix="bench-shape-engine-") as tmp:
        for repeat in range(args.repeats):
            for case in CASES:
                work = Path(tmp) / f"{case.key}-{repeat}"
                work.mkdir()
                figures[case.key].append(cost(case, args.rounds, work))
    print(f"machine: {machine()}")
    print(f"rule engine only, {args.rounds} rounds of polls, median of {args.repeats}")
    ref = median([f[0] for f in figures[REFERENCE.key]])
    for case in CASES:
        per_point = median([f[0] for f in figures[case.key]])
        per_poll = median([f[1] for f in figures[case.key]])
        print(f"{case.label:<26}{per_point:>8.2f} µs/datapoint{per_poll:>9.1f} µs/poll"
              f"{per_point / ref:>7.2f} × ref", file=sys.stdout)


if __name__ == "__main__":
    main()
