"""How much of the time before each power cut the store lost, from a run's logs.

    python bench/powercut/loss_window.py /var/tmp/powercut/runs/normal-YYYYMMDDTHHMMSS

For each cut: the messages published in the boot that was cut whose seqs the store no
longer held when it started again (``stored_seq`` of ``store_seq_resumed_after_power_loss``),
and the seconds between the first of them and the boot's last message (the cut). With
``synchronous: full`` there is nothing to report (no cut loses a commit).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def loss_windows(platform_rows: list[dict[str, object]],
                 cuts: list[dict[str, object]]) -> list[dict[str, object]]:
    """Per cut: messages lost from the store, and the seconds before the cut they span.
    A cut's boot is 2n-1 (the boot after it, 2n, is stopped cleanly)."""
    out = []
    for cut in cuts:
        skips = cut["skips"]
        if not skips:
            continue
        number = int(cut["cut"])  # type: ignore[call-overload]
        stored = int(skips[0][0])  # type: ignore[index]
        boot = [r for r in platform_rows if r["boot"] == 2 * number - 1]
        lost = [r for r in boot if int(r["seq"]) > stored]  # type: ignore[call-overload]
        span = (max(float(r["t"]) for r in boot) - min(float(r["t"]) for r in lost)  # type: ignore[arg-type]
                if lost else 0.0)
        out.append({"cut": number, "ran_s": cut["ran_s"], "published": len(boot),
                    "lost": len({r["seq"] for r in lost}), "lost_s": round(span, 1)})
    return out


def main() -> int:
    run = Path(sys.argv[1])
    rows = [json.loads(line) for line in (run / "platform.jsonl").read_text().splitlines()
            if line.strip()]
    windows = loss_windows(rows, json.loads((run / "cuts.json").read_text()))
    for w in windows:
        print(json.dumps(w))
    if windows:
        print(f"median lost {statistics.median(w['lost'] for w in windows)} messages, "  # type: ignore[misc]
              f"median {statistics.median(w['lost_s'] for w in windows)} s before the cut, "  # type: ignore[misc]
              f"max {max(w['lost_s'] for w in windows)} s")  # type: ignore[type-var]
    return 0


if __name__ == "__main__":
    sys.exit(main())
