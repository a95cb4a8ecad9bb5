"""What a ``resend`` of N seqs costs the gateway's store: time and SQL statements.

Fills a real Store (synchronous=full, the default) with delivered telemetry: one device
poll of 10 readings per seq, committed and acknowledged as the daemon does, so the outbox
is empty and every resent message is rebuilt from its stored parts. Then asks, on the
store thread's own code (``OutboxRows.requeue_ranges``, the step the ``resend`` command
runs), for N seqs in two shapes:

* ``range``: one ``[low, high]`` (the ``from_seq``/``to_seq`` form);
* ``list``: the worst list a request may hold, 500 items (N single seqs when N <= 500,
  else 500 ranges of N/500 seqs with a gap between each), as a platform asking for
  exactly its gaps would.

Each run is timed and its SQL statements counted (sqlite3's trace callback: every
execution, each row of an executemany counted once); then the requeued rows are
acknowledged again so every run starts from the same store. Reports medians of
``--repeat`` runs. Sending the messages again is the uplink's ordinary work and is not
counted here.

Usage: python bench/resend_cost.py [--seqs 20000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _common import machine, median

from edge.commands import MAX_RESEND_ITEMS, merge_ranges
from edge.store import Store
from vocab.model import Reading

READINGS_PER_SEQ = 10


def fill(store: Store, seqs: int) -> None:
    """``seqs`` device polls, committed 500 to a transaction, and acknowledged."""
    ts = 1_764_000_000_000
    for start in range(0, seqs, 500):
        cycles = [([Reading("logger-1", f"p{j}", ts + i * 1000, 100.0 + j * 0.01 + i * 1e-4,
                            "m", "good", 10000.0 + j) for j in range(READINGS_PER_SEQ)], [])
                  for i in range(start, min(start + 500, seqs))]
        for queued in store.commit_cycles(cycles, shared=False):  # a seq per poll
            store.outbox.ack(queued)
        store.outbox.flush_acks()


def shapes(n: int, first: int) -> dict[str, list[tuple[int, int]]]:
    if n <= MAX_RESEND_ITEMS:
        listed = [(first + 2 * i, first + 2 * i) for i in range(n)]
    else:
        width = n // MAX_RESEND_ITEMS
        listed = [(first + i * (width + 1), first + i * (width + 1) + width - 1)
                  for i in range(MAX_RESEND_ITEMS)]
    return {"range": [(first, first + n - 1)], "list": merge_ranges(listed)}


def measure(store: Store, ranges: list[tuple[int, int]]) -> tuple[float, int, int]:
    """(seconds, SQL statements, messages requeued) of one requeue, then undone."""
    statements = 0

    def count(_: str) -> None:
        nonlocal statements
        statements += 1

    conn = store.connection
    conn.set_trace_callback(count)
    start = time.perf_counter()
    report = store.outbox.requeue_ranges(ranges)
    elapsed = time.perf_counter() - start
    conn.set_trace_callback(None)
    # Delivered again: the next run finds the same empty outbox.
    store.outbox.ack(s for low, high in ranges for s in range(low, high + 1))
    store.outbox.flush_acks()
    return elapsed, statements, report.requeued


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seqs", type=int, default=20_000, help="seqs in the store")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="bench-resend-") as tmp:
        store = Store(Path(tmp) / "edge.db", "full")
        fill(store, args.seqs)
        print(f"store: {args.seqs} delivered seqs of {READINGS_PER_SEQ} readings; "
              f"median of {args.repeat} runs")
        print(f"{'N':>6} {'shape':>6} {'items':>6} {'ms':>8} {'us/seq':>7} "
              f"{'statements':>10} {'requeued':>8}")
        for n in (10, 100, 1000, 10_000):
            for shape, ranges in shapes(n, args.seqs // 4).items():
                runs = [measure(store, ranges) for _ in range(args.repeat)]
                seconds = median([r[0] for r in runs])
                requeued = runs[0][2]
                print(f"{n:>6} {shape:>6} {len(ranges):>6} {seconds * 1000:>8.2f} "
                      f"{seconds * 1e6 / max(requeued, 1):>7.1f} "
                      f"{int(median([float(r[1]) for r in runs])):>10} {requeued:>8}")
        store.close()


if __name__ == "__main__":
    main()
