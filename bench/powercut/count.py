"""What a power-cut run cost, counted from what the platform received and what the store kept.

Pure functions over the platform's log (one JSON line per message received: boot, kind,
seq, content digest, readings), the seqs the gateway's store still holds after the last
clean stop, and the seq ranges the store announced it skipped after a power cut
(``store_seq_resumed_after_power_loss``). ``tests/bench/test_powercut_count.py`` checks
them on synthetic logs; ``powercut.py`` runs them on a real one.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

# Telemetry messages carry readings; alarms and events carry none.
SEQ_KINDS = ("telemetry", "alarms", "events")
RESUMED = re.compile(r"store_seq_resumed_after_power_loss\b.*")
_FIELD = re.compile(r"\b(resumed_seq|stored_seq)=(\d+)")


@dataclass(frozen=True)
class Received:
    """One message as the platform received it."""

    boot: int
    kind: str
    seq: int
    digest: str  # of the content without the "replay" marker a resend adds
    readings: int


@dataclass
class CutCounts:
    messages: int = 0  # seq'd messages received, duplicates included
    seqs: int = 0  # distinct seqs received
    highest_seq: int = 0
    reused_seqs: int = 0  # seqs received with two or more different contents (the failure)
    reused_readings: int = 0  # readings in the versions a platform de-duplicating by seq drops
    reused_alarms: int = 0  # alarm messages it drops likewise
    missing_seqs: int = 0  # seqs in 1..highest never received
    missing_in_skips: int = 0  # of which inside a range the store skipped after a cut
    skipped_seqs: int = 0  # seqs the store announced skipping, in all
    store_lost_messages: int = 0  # telemetry/alarm seqs the platform has, the store lacks
    store_lost_readings: int = 0
    store_lost_alarms: int = 0
    alarms: int = 0  # distinct alarm seqs received
    readings: int = 0  # readings in the first version of each telemetry seq
    skips: list[tuple[int, int]] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def digest(payload: bytes) -> tuple[int, str, int]:
    """(seq, content digest, readings) of a seq'd message; a resend's ``replay`` marker
    is not content. Raises ValueError naming what is wrong with a payload without seq."""
    try:
        body = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"payload is not JSON: {e}") from e
    if not isinstance(body, dict) or not isinstance(body.get("seq"), int):
        raise ValueError(f"payload has no integer seq: {payload[:80]!r}")
    body.pop("replay", None)
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    readings = body.get("readings")
    return (body["seq"], hashlib.sha256(canonical).hexdigest()[:16],
            len(readings) if isinstance(readings, list) else 0)


def skips_from_console(text: str) -> list[tuple[int, int]]:
    """(stored_seq, resumed_seq) of each ``store_seq_resumed_after_power_loss`` line."""
    out = []
    for line in RESUMED.findall(text):
        fields = dict(_FIELD.findall(line))
        if "resumed_seq" in fields and "stored_seq" in fields:
            out.append((int(fields["stored_seq"]), int(fields["resumed_seq"])))
    return out


def read_platform_log(path: Path) -> list[Received]:
    out = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            out.append(Received(int(row["boot"]), str(row["kind"]), int(row["seq"]),
                                str(row["digest"]), int(row["readings"])))
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}:{number}: not a platform log line ({e})") from e
    return out


def count(received: Sequence[Received], store_telemetry: Iterable[int],
          store_alarms: Iterable[int], skips: Iterable[tuple[int, int]]) -> CutCounts:
    """The figures of one run. The platform keeps the first content it received for a
    seq; a later, different content under the same seq is what it throws away."""
    first: dict[int, Received] = {}
    versions: dict[int, dict[str, Received]] = {}
    for message in received:
        first.setdefault(message.seq, message)
        versions.setdefault(message.seq, {}).setdefault(message.digest, message)
    counts = CutCounts(messages=len(received), seqs=len(first),
                       highest_seq=max(first, default=0), skips=list(skips))
    for seq, by_digest in versions.items():
        dropped = [m for d, m in by_digest.items() if d != first[seq].digest]
        if dropped:
            counts.reused_seqs += 1
            counts.reused_readings += sum(m.readings for m in dropped)
            counts.reused_alarms += sum(m.kind == "alarms" for m in dropped)
    skipped: set[int] = set()
    for stored, resumed in counts.skips:
        skipped.update(range(stored + 1, resumed + 1))
    counts.skipped_seqs = len(skipped)
    missing = set(range(1, counts.highest_seq + 1)) - first.keys()
    counts.missing_seqs = len(missing)
    counts.missing_in_skips = len(missing & skipped)
    _count_store_losses(counts, first, set(store_telemetry), set(store_alarms))
    return counts


def _count_store_losses(counts: CutCounts, first: dict[int, Received],
                        store_telemetry: set[int], store_alarms: set[int]) -> None:
    for seq, message in first.items():
        if message.kind == "telemetry":
            counts.readings += message.readings
            if seq not in store_telemetry:
                counts.store_lost_messages += 1
                counts.store_lost_readings += message.readings
        elif message.kind == "alarms":
            counts.alarms += 1
            if seq not in store_alarms:
                counts.store_lost_messages += 1
                counts.store_lost_alarms += 1
