#!/usr/bin/env python3
"""Summarise what a gateway delivered to the check's broker, from `mosquitto_sub -v` output.

    broker_log.py SUB_LOG [--since-ms EPOCH_MS] [--point DEVICE/POINT]

Prints one `key=value` per line for scripts/target/*.sh:
  messages, seq_min, seq_max, seq_gaps (missing seqs, first ten), duplicates (re-sent
  seqs: allowed, delivery is at least once), readings, point_seen (the --point appeared
  in telemetry whose seq was sent after --since-ms), offline_ts (the newest `offline`
  status stamped at or after --since-ms, else empty).

Standard library only, so the host's python3 runs it on a log in the target's root file
system. Lines that are not a gateway topic with a JSON object are skipped, not fatal: the
subscriber may be killed mid-line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

SEQ_TOPICS = ("telemetry", "alarms", "events")


def summarise(lines: list[str], since_ms: int, point: str | None) -> dict[str, str]:
    seqs: list[int] = []
    readings = 0
    point_seen = False
    offline_ts: int | None = None
    for line in lines:
        topic, _, payload = line.partition(" ")
        kind = topic.rsplit("/", 1)[-1]
        try:
            body = json.loads(payload)
        except ValueError:
            continue
        if not isinstance(body, dict):
            continue
        if kind in SEQ_TOPICS and isinstance(body.get("seq"), int):
            seqs.append(body["seq"])
        if kind == "telemetry":
            for reading in body.get("readings", []):
                readings += 1
                name = f"{reading.get('device')}/{reading.get('point')}"
                if point and name == point and int(reading.get("ts", 0)) >= since_ms:
                    point_seen = True
        if kind == "status" and body.get("state") == "offline":
            ts = int(body.get("ts", 0))
            if ts >= since_ms:
                offline_ts = ts
    unique = sorted(set(seqs))
    gaps: list[int] = []
    if unique:
        present = set(unique)
        gaps = [s for s in range(1, unique[-1] + 1) if s not in present]
    return {
        "messages": str(len(seqs)),
        "seq_min": str(unique[0]) if unique else "",
        "seq_max": str(unique[-1]) if unique else "",
        "seq_gaps": ",".join(map(str, gaps[:10])) + ("..." if len(gaps) > 10 else ""),
        "duplicates": str(len(seqs) - len(unique)),
        "readings": str(readings),
        "point_seen": "yes" if point_seen else "no",
        "offline_ts": "" if offline_ts is None else str(offline_ts),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log", type=Path)
    parser.add_argument("--since-ms", type=int, default=0)
    parser.add_argument("--point")
    args = parser.parse_args(argv)
    try:
        text = args.log.read_text(errors="replace")
    except OSError as exc:
        print(f"broker_log.py: {args.log}: {exc.strerror}", file=sys.stderr)
        return 1
    for key, value in summarise(text.splitlines(), args.since_ms, args.point).items():
        print(f"{key}={value}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
