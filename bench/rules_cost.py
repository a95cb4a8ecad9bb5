"""Rule evaluation cost per reading, and the HST fit time for three years of hourly data.

A synthetic site of 200 points on 20 devices (polled every 5 min) with 400 rules of every
type and 20 derived points runs a simulated day through ``RuleEngine.evaluate``, one call
per device poll as the daemon makes them; the figure is the engine's wall time divided
by the readings it was given, median of several fresh runs. The HST figures are
``fit_hst`` on 26 280 hourly rows, and the rule's whole refit path (binning Reading lists
from a history provider, the holdout trial and the final fit), median of several runs.

    python bench/rules_cost.py [--runs 5] [--hours 24]

numpy's BLAS threads fight for a small, busy machine's cores; OPENBLAS_NUM_THREADS=1
gives the steadier HST figure there.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from typing import Any

import numpy as np
from _common import machine

from edge.config import GatewaySettings
from rules.engine import RuleEngine
from rules.hst import FitPlan, fit_from_history
from rules.statistics import fit_hst, hst_term_names
from vocab.model import Reading

DEVICES = 20
POINTS_PER_DEVICE = 10
POLL_S = 300
T0 = 1_719_792_000_000  # 2024-07-01 08:00 Beijing time
# Point kinds by index on each device: what they measure decides which rules they get.
KINDS = ["level", "rain", "head", "head", "flow", "head", "disp", "head", "flow", "temp"]
UNITS = {"level": "m", "rain": "mm", "head": "m", "flow": "L/s", "disp": "mm", "temp": "°C"}
QUANTITY = {"level": "water_level", "rain": "rainfall", "head": "piezometric_level",
            "flow": "seepage_flow", "disp": "displacement", "temp": "temperature"}


def site() -> GatewaySettings:
    devices = [{
        "id": f"d{d:02d}", "bus": "lan", "poll_interval_s": POLL_S,
        "points": [{"id": f"p{p}", "quantity": QUANTITY[KINDS[p]], "unit": UNITS[KINDS[p]],
                    "register": {"table": "input", "address": p}}
                   for p in range(POINTS_PER_DEVICE)]}
        for d in range(DEVICES)]
    points = [(f"d{d:02d}/p{p}", KINDS[p]) for d in range(DEVICES)
              for p in range(POINTS_PER_DEVICE)]
    rules: list[dict[str, Any]] = []
    for i, (key, _) in enumerate(points):  # 200 thresholds
        rules.append({"id": f"thr{i}", "type": "threshold", "point": key,
                      "high": [{"severity": "warning", "value": 1e6}], "hysteresis": 0.01})
    level_like = [k for k, kind in points if kind in ("level", "head", "disp")]
    for i, key in enumerate(level_like[:60]):  # 60 rates
        rules.append({"id": f"rate{i}", "type": "rate", "point": key,
                      "method": "least_squares" if i % 2 else "endpoint", "window": "1h",
                      "per": f"{UNITS[dict(points)[key]]}/h",
                      "high": [{"severity": "warning", "value": 1e6}]})
    not_rain = [key for key, kind in points if kind != "rain"]
    for i, key in enumerate(not_rain[:60]):  # 60 quality
        rules.append({"id": f"q{i}", "type": "quality", "point": key, "range": [-1e6, 1e6],
                      "offline": {"after": 3}, "jump": {"max_step": 1e5},
                      "gross_error": {"window": 30, "floor": 0.05},
                      "stuck": {"samples": 48, "epsilon": 0.0}})
    names = hst_term_names()
    seepage = [k for k, kind in points if kind in ("flow", "head")]
    for i, key in enumerate(seepage[:40]):  # 40 HST with configured coefficients
        rules.append({"id": f"hst{i}", "type": "hst", "point": key, "level": "d00/p0",
                      "model": {"base_date": "2024-01-01", "head_centre": 5.0, "s": 1e3,
                                "coefficients": dict.fromkeys(names, 0.01)}})
    rains = [k for k, kind in points if kind == "rain"]
    for i, key in enumerate(rains):  # 20 accumulations
        rules.append({"id": f"rain{i}", "type": "accumulation", "point": key,
                      "windows": [{"window": w, "high": [{"severity": "warning", "value": 1e6}]}
                                  for w in ("1h", "3h", "6h", "12h", "24h")],
                      "event": {"dry_gap": "6h"}})
    heads = [k for k, kind in points if kind == "head"]
    for i, key in enumerate(heads[:20]):  # 20 lag correlations
        rules.append({"id": f"lag{i}", "type": "lag_correlation", "point": key,
                      "level": "d00/p0", "lag": "10d",
                      "low": [{"severity": "warning", "value": -2.0}]})
    assert len(rules) == 400, len(rules)
    derived = [{"id": f"g{i}", "expression": f"({{{heads[i]}}} - {{{heads[i + 1]}}}) / 12.5"}
               for i in range(19)]
    derived.append({"id": "freeboard", "expression": "crest - {d00/p0}", "unit": "m"})
    return GatewaySettings.model_validate({
        "site": {"id": "bench", "levels": {"crest": 126.0}},
        "gateway": {"id": "gw"}, "mqtt": {"host": "127.0.0.1"},
        "store": {"path": "/tmp/bench.db"},
        "buses": [{"id": "lan", "type": "modbus_tcp", "host": "127.0.0.1"}],
        "devices": devices, "rules": rules, "derived": derived})


def polls(hours: int) -> list[list[Reading]]:
    rng = np.random.default_rng(1)
    out = []
    for step in range(hours * 3600 // POLL_S):
        for d in range(DEVICES):
            ts = T0 + step * POLL_S * 1000 + d * 1000
            readings = []
            for p, kind in enumerate(KINDS):
                if kind == "rain":
                    value = float(round(rng.choice([0.0, 0.0, 0.5, 1.0]), 1))
                else:
                    value = float(100 + 5 * math.sin(step / 50 + p) + rng.normal(0, 0.01))
                readings.append(Reading(f"d{d:02d}", f"p{p}", ts, value, UNITS[kind], "good"))
            out.append(readings)
    return out


def evaluation_cost(settings: GatewaySettings, batches: list[list[Reading]]) -> float:
    """µs per reading for one fresh engine over every poll."""
    engine = RuleEngine(settings.rule_site())
    count = sum(len(b) for b in batches)
    start = time.perf_counter()
    for batch in batches:
        engine.evaluate(batch)
    return (time.perf_counter() - start) / count * 1e6


def hst_data(hours: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t = T0 / 86_400_000 + np.arange(hours) / 24
    level = 115 + 5 * np.sin(2 * np.pi * t / 365) + 1.5 * np.sin(2 * np.pi * t / 23)
    h = level - 110
    y = (2 + 0.08 * h + 0.004 * h**2 + 0.05 * np.sin(2 * np.pi * t / 365)
         + np.random.default_rng(3).normal(0, 0.005, hours))
    return t, level, y


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--hours", type=int, default=24)
    args = parser.parse_args()

    settings = site()
    batches = polls(args.hours)
    readings = sum(len(b) for b in batches)
    costs = [evaluation_cost(settings, batches) for _ in range(args.runs)]

    hours = 3 * 365 * 24
    t, level, y = hst_data(hours)
    fits = []
    for _ in range(args.runs):
        start = time.perf_counter()
        fit_hst(t, level - 110, y, base_day=float(t[0]))
        fits.append(time.perf_counter() - start)
    ts = (t * 86_400_000).astype(np.int64)
    ys = [Reading("w", "flow", int(a), float(b), "L/s", "good") for a, b in zip(ts, y, strict=True)]
    levels = [Reading("l", "level", int(a), float(b), "m", "good")
              for a, b in zip(ts, level, strict=True)]
    old = fit_hst(t[:-24 * 60], level[:-24 * 60] - 110, y[:-24 * 60], base_day=float(t[0]))
    plan = FitPlan(base_day=float(t[0]), bin_ms=3_600_000, offset_ms=0, head_reference=110.0,
                   degree=3, seasonal=True, min_samples=500, holdout_ms=30 * 86_400_000)
    refits = []
    for _ in range(args.runs):
        start = time.perf_counter()
        fit_from_history(ys, levels, plan, now_ms=int(ts[-1]), excluded_bins=set(), old=old)
        refits.append(time.perf_counter() - start)

    blas = os.environ.get("OPENBLAS_NUM_THREADS", "default")
    print(f"machine: {machine()}; {platform.platform()}; BLAS threads: {blas}")
    print(f"site: {DEVICES * POINTS_PER_DEVICE} points, {len(settings.rules)} rules, "
          f"{len(settings.derived)} derived points; {len(batches)} polls, {readings} readings")
    print(f"rule evaluation: {statistics.median(costs):.1f} µs per reading "
          f"(median of {args.runs}; runs {', '.join(f'{c:.1f}' for c in costs)})")
    print(f"HST fit_hst, {hours} hourly rows: {statistics.median(fits) * 1000:.1f} ms "
          f"(median of {args.runs})")
    print(f"HST refit from history (binning, holdout trial, final fit): "
          f"{statistics.median(refits) * 1000:.1f} ms (median of {args.runs})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
