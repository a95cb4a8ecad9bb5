"""Where the running daemon's Python memory sits: tracemalloc in a real ``edge run``.

Runs the same site as bench/memory.py (``edge simulate`` serving 10 Modbus TCP devices x 100
float32 points, one threshold rule per device, a private Mosquitto and a subscriber), but the
gateway is started as ``python bench/memory_trace.py --daemon ...``: that wrapper starts
tracemalloc (``--frames`` deep) before anything of ours is imported, runs ``edge.entry.main``
and, --seconds after start, writes a snapshot from a timer signal. The bench then prints the
gateway's RSS at that moment and the traced memory grouped three ways: by the top-level
package whose file allocated it, by the module being imported when it was allocated (the
first of our or a library's frames below the import machinery), and the largest
allocation sites of the running gateway (allocations made after start-up, grouped by the
first frame in edge/, drivers/, rules/ or vocab/).

``--tree DIR`` runs the gateway from another checkout (e.g. a worktree of the tree before
the restructure) with the same simulator, broker and site, for a side-by-side.

``--small N`` runs the reservoir's shape of bench/memory_per_device.py instead: N devices of
one float32 point each, as unit ids behind one Modbus TCP endpoint, no rules; with
``--endpoints`` each on an endpoint (and a bus) of its own; ``--per-device 10 --rules`` makes
it bench/reservoir_shape.py's 200 × 10 with its two rules a device.

The cyclic collector's runs (``gc.callbacks`` in the gateway: per generation, their CPU
time and what they freed) are printed as a share of the gateway's CPU since its start;
``BENCH_COLLECTOR_THRESHOLD=700`` runs the gateway with CPython's own first threshold
instead of the daemon's (edge/heap.py).

Usage: python bench/memory_trace.py [--seconds 40] [--frames 25] [--tree DIR] [--points 1000]
       [--small N [--endpoints] [--per-device K] [--rules]]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

OURS = ("/edge/", "/drivers/", "/rules/", "/vocab/", "/simulator/")


def _daemon(argv: list[str]) -> None:
    """In the gateway process: trace, schedule the snapshot, run the CLI."""
    frames, seconds, out = int(argv[0]), float(argv[1]), argv[2]
    if frames:
        tracemalloc.start(frames)
    collector = _time_collector()

    def dump(signum: int, frame: object) -> None:
        if frames:
            tracemalloc.take_snapshot().dump(out)
        collector["cpu_s"] = time.process_time()
        Path(out + ".collector.json").write_text(json.dumps(collector))
        Path(out + ".done").write_text("")

    # A timer signal, not a thread: with a second thread the daemon would load its
    # configuration in place instead of in its forked child (edge/daemon_config.py), and
    # the trace would show a peak the real daemon never keeps.
    signal.signal(signal.SIGALRM, dump)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        from edge.entry import main as edge_main
    except ImportError:  # a tree from before edge/entry.py (--tree)
        from edge.cli import main as edge_main

    threshold = os.environ.get("BENCH_COLLECTOR_THRESHOLD")
    if threshold:
        # The daemon sets its own at start (edge/heap.py tune_collector): this one instead.
        import edge.heap

        edge.heap.COLLECTOR_THRESHOLD = int(threshold)
    sys.argv = ["edge", *argv[3:]]
    raise SystemExit(edge_main(argv[3:]))


def _time_collector() -> dict[str, Any]:
    """Count the cyclic collector's runs per generation, their CPU time and what they
    freed, from here on (``gc.callbacks``)."""
    import gc

    totals: dict[str, Any] = {"runs": [0, 0, 0], "seconds": [0.0, 0.0, 0.0],
                              "collected": [0, 0, 0]}
    began = [0.0]

    def timed(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            began[0] = time.process_time()
            return
        generation = info["generation"]
        totals["runs"][generation] += 1
        totals["seconds"][generation] += time.process_time() - began[0]
        totals["collected"][generation] += info["collected"]

    gc.callbacks.append(timed)
    return totals


def collector_report(path: Path) -> str:
    figures = json.loads(path.read_text())
    spent = sum(figures["seconds"])
    runs = ", ".join(f"gen{g} {n} ({1000 * s:.1f} ms, {c} freed)" for g, (n, s, c) in
                     enumerate(zip(figures["runs"], figures["seconds"], figures["collected"],
                                   strict=True)))
    return (f"cyclic collector since start: {runs}; {1000 * spent:.0f} ms, "
            f"{100 * spent / figures['cpu_s']:.1f} % of the gateway's "
            f"{figures['cpu_s']:.2f} s of CPU")


def package_of(filename: str) -> str:
    for marker in ("site-packages/", "/lib/python3."):
        if marker in filename:
            rest = filename.split(marker, 1)[1]
            if marker.startswith("/lib"):
                rest = rest.split("/", 1)[1] if "/" in rest else rest
            return rest.split("/", 1)[0].removesuffix(".py")
    for marker in OURS:
        if marker in filename:
            return marker.strip("/") + "/" + filename.rsplit(marker, 1)[1]
    return filename


def importing_module(tb: tracemalloc.Traceback) -> str | None:
    """The module whose body was running when this was allocated, or None at run time."""
    # A Traceback lists the oldest frame first (Python >= 3.7): walk it from the most recent.
    frames = list(reversed(tb))
    for i, frame in enumerate(frames):
        if frame.filename.startswith("<frozen importlib"):
            # Allocation inside the import machinery itself (code objects): the caller
            # of the machinery is the importer; the module imported is not in the frames.
            continue
        if any(f.filename.startswith("<frozen importlib") for f in frames[i + 1:]):
            return package_of(frame.filename)
        return None
    return "<import machinery>"


def smaps_by_mapping(pid: int) -> dict[str, int]:
    """Rss (KiB) of a process's mappings: [heap], anonymous, [stack], and each file."""
    found: collections.Counter[str] = collections.Counter()
    current = "?"
    size = 0
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        parts = line.split()
        if parts and "-" in parts[0] and not parts[0].endswith(":"):
            current = parts[5] if len(parts) > 5 else "anonymous"
            start, end = (int(x, 16) for x in parts[0].split("-"))
            size = (end - start) // 1024
        elif parts and parts[0] == "Rss:":
            found[current] += int(parts[1])
            if current == "anonymous":
                # Sizes tell the kinds apart: pymalloc arenas are 1 MiB, glibc's
                # per-thread heaps up to 64 MiB, thread stacks 8 MiB.
                kind = ("1 MiB (pymalloc arenas)" if size == 1024 else
                        "thread stacks (8 MiB + guard)" if size in (8192, 8196) else
                        "up to 64 MiB (glibc thread heaps)" if size >= 16384 else
                        "other anonymous")
                found[f"  anonymous: {kind}"] += int(parts[1])
    return found


def report(snapshot_path: str, top: int) -> None:
    snap = tracemalloc.Snapshot.load(snapshot_path)
    by_package: collections.Counter[str] = collections.Counter()
    at_import: collections.Counter[str] = collections.Counter()
    running: collections.Counter[str] = collections.Counter()
    total = import_total = 0
    for stat in snap.statistics("traceback"):
        total += stat.size
        by_package[package_of(stat.traceback[-1].filename)] += stat.size
        module = importing_module(stat.traceback)
        if module is not None:
            import_total += stat.size
            at_import[module] += stat.size
            continue
        site = next((f"{package_of(f.filename)}:{f.lineno}" for f in reversed(stat.traceback)
                     if any(m in f.filename for m in OURS)), None)
        running[site or f"{package_of(stat.traceback[-1].filename)}:"
                        f"{stat.traceback[-1].lineno}"] += stat.size
    print(f"traced {total / 2**20:.2f} MiB; allocated while importing "
          f"{import_total / 2**20:.2f} MiB, after {(total - import_total) / 2**20:.2f} MiB")
    for title, counter in (("by allocating file's package", by_package),
                           ("while importing, by importing module", at_import),
                           ("after start-up, by the innermost frame of ours", running)):
        print(f"--- {title}")
        for key, size in counter.most_common(top):
            print(f"{size / 1024:9.1f} KiB  {key}")


def main() -> None:
    if sys.argv[1:2] == ["--daemon"]:
        _daemon(sys.argv[2:])
        return
    from _common import (
        REPO,
        BenchBus,
        Subscriber,
        bench_site_config,
        free_port,
        free_ports,
        machine,
        plan_buses,
        proc_memory_mib,
        start_broker,
        start_simulators,
        stop_all,
        tear_down,
    )
    from _shape import Case, instrument_rules
    from memory import threshold_rules

    from tests.support import EdgeProcess

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=40)
    parser.add_argument("--frames", type=int, default=25,
                        help="tracemalloc depth; 0 runs untraced (RSS by mapping only)")
    parser.add_argument("--points", type=int, default=1000)
    parser.add_argument("--tree", type=Path, default=REPO)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--small", type=int, default=0, help="one-point devices instead")
    parser.add_argument("--endpoints", action="store_true",
                        help="with --small: each device on its own endpoint (one bus each)")
    parser.add_argument("--per-device", type=int, default=1,
                        help="with --small: float32 points a device (10: issue 19's 200 x 10)")
    parser.add_argument("--rules", action="store_true",
                        help="with --small: bench/reservoir_shape.py's quality and threshold "
                             "rule on every device's first point")
    parser.add_argument("--reload-at", type=float, default=None,
                        help="send the gateway SIGHUP (a reload of the same file) this many "
                             "seconds after start; the snapshot then holds what it leaves")
    parser.add_argument("--fold-s", type=float, default=None,
                        help="store.history_fold_s (and maintenance every 5 s): the "
                             "snapshot then holds what a fold of history leaves behind")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-trace-",
                                     dir=os.environ.get("BENCH_DIR")) as tmp:
        work = Path(tmp)
        broker = start_broker(work)
        if args.small and args.endpoints:
            buses = [BenchBus(port, [args.per_device], n)
                     for n, port in enumerate(free_ports(args.small))]
        elif args.small:
            buses = [BenchBus(free_port(), [args.per_device] * args.small, 0)]
        else:
            buses = plan_buses(args.points)
        devices = sum(len(b.devices) for b in buses)
        rules = threshold_rules(devices) if not args.small else \
            instrument_rules(Case("traced", devices, args.per_device, 1.0)) if args.rules else []
        config = bench_site_config(work, broker.port, buses, rules=rules,
                                   store=work / "site.db")
        if args.fold_s is not None:
            # Here, not at the top: this file is also the traced gateway (--daemon), which
            # must not have PyYAML loaded for it.
            import yaml

            site = yaml.safe_load(config.read_text())
            site["store"].update(history_fold_s=args.fold_s, maintenance_interval_s=5)
            config.write_text(yaml.safe_dump(site, sort_keys=False))
        out = str(work / "snapshot")
        sims, sub, gateway = [], None, None
        try:
            sims = start_simulators(work, buses, 1)
            sub = Subscriber(broker.port, "reservoir/bench/gw/#")
            env = {**os.environ, "PYTHONPATH": str(args.tree.resolve())}
            log = work / "gw.log"
            proc = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--daemon", str(args.frames),
                 str(args.seconds), out, "run", "-c", str(config), "--log-level", "warning"],
                cwd=args.tree, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)
            gateway = EdgeProcess(proc, log)
            started = time.monotonic()
            deadline = started + args.seconds + 120
            reload_at = None if args.reload_at is None else started + args.reload_at
            while not Path(out + ".done").exists():
                if reload_at is not None and time.monotonic() >= reload_at:
                    rss_before_reload = proc_memory_mib(proc.pid)["rss"]
                    proc.send_signal(signal.SIGHUP)
                    reload_at = None
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("gateway ended or hung:\n" + gateway.output()[-2000:])
                time.sleep(0.5)
            rss = proc_memory_mib(proc.pid)["rss"]
            mappings = smaps_by_mapping(proc.pid)
            readings = sub.readings
        finally:
            stop_all([gateway])
            tear_down(None, sims, sub, broker)
        print(f"machine: {machine()}; tree {args.tree}")
        points = sum(sum(b.devices) for b in buses)
        print(f"{points} points on {devices} devices every 1 s; snapshot after "
              f"{args.seconds:g} s ({readings} readings delivered); gateway RSS {rss:.1f} MiB"
              + (" (with tracemalloc's own bookkeeping)" if args.frames else ""))
        if args.reload_at is not None:
            print(f"RSS just before the reload at {args.reload_at:g} s: "
                  f"{rss_before_reload:.1f} MiB")
        if Path(out + ".collector.json").exists():
            print(collector_report(Path(out + ".collector.json")))
        print("--- Rss by mapping (KiB)")
        for name, kib in sorted(mappings.items(), key=lambda kv: -kv[1])[:args.top]:
            print(f"{kib:9d}  {name}")
        if args.frames:
            report(out, args.top)


if __name__ == "__main__":
    main()
