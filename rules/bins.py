"""Means of readings over site-local bins (hours, days), from the store and kept up live.

The statistical rules of the domain reference judge daily or hourly means rather than
single readings: the HST model (§3.1) and the lag correlation (§3.2) are fitted on bin
means of a piezometer and the reservoir level; the piezometric potential's drift and the
seepage-versus-level regression (§4, "above the historical maximum at the same reservoir
level") compare today with the days of the past year. Bins are aligned to site-local
midnight (``rules.base.standard_offset_ms``), so a daily bin is the day the keeper's
records show.

Only good readings enter a bin (a dry piezometer's reading is no level: vocab DRY).
A year of a one-minute level is half a million stored readings, so history is read page
by page and binned as it comes, and a rule reads it on the rules' worker thread
(``SeededBins``), never on the event loop.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from concurrent.futures import Executor, Future

import structlog

from rules.base import HistoryProvider
from vocab.model import Reading

__all__ = ["BinSums", "SeededBins", "add_to_bins", "history_bin_means", "history_bins",
           "means"]

log = structlog.get_logger("rules.bins")

BinSums = dict[int, list[float]]
"""Bin number → [sum of values, count of values]."""


def bin_of(ts_ms: int, bin_ms: int, offset_ms: int) -> int:
    """Bin b covers [b·bin, (b + 1)·bin) of site-local time."""
    return (ts_ms + offset_ms) // bin_ms


def usable(reading: Reading) -> bool:
    return (reading.quality == "good" and reading.value is not None
            and math.isfinite(reading.value) and not reading.dry)


def add_to_bins(sums: BinSums, readings: Iterable[Reading], bin_ms: int,
                offset_ms: int) -> None:
    for r in readings:
        if usable(r):
            assert r.value is not None
            acc = sums.setdefault(bin_of(r.ts_ms, bin_ms, offset_ms), [0.0, 0.0])
            acc[0] += r.value
            acc[1] += 1


def means(sums: BinSums) -> dict[int, float]:
    return {b: total / count for b, (total, count) in sums.items() if count}


def history_bins(history: HistoryProvider, point: str, from_ms: int, to_ms: int,
                 bin_ms: int, offset_ms: int = 0) -> BinSums:
    """Bin sums of a point's whole stored history between two times, page by page.

    A history provider returns at most a bounded number of the oldest readings of a
    range (HistoryReader.MAX_ROWS): two years of one-minute polls are a million
    readings, and one call would see their oldest 139 days only. Each page is binned
    and dropped before the next is read.
    """
    sums: BinSums = {}
    cursor = from_ms
    while cursor <= to_ms:
        page = history(point, cursor, to_ms)
        if not page:
            break
        add_to_bins(sums, page, bin_ms, offset_ms)
        cursor = max(r.ts_ms for r in page) + 1
    return sums


def history_bin_means(history: HistoryProvider, point: str, from_ms: int, to_ms: int,
                      bin_ms: int, offset_ms: int = 0) -> dict[int, float]:
    """``history_bins`` as means."""
    return means(history_bins(history, point, from_ms, to_ms, bin_ms, offset_ms))


class SeededBins:
    """Bin sums of a few points: the stored history once, then every new reading.

    At the first reading (``start``) the history of the last ``span_ms`` before it is
    read, on the worker when there is one; readings from that moment on are added live,
    so nothing is counted twice. Until the history is in, ``loading`` says so and the
    rule holds. Bins older than the span are dropped as time goes on.
    """

    def __init__(self, points: Sequence[str], bin_ms: int, offset_ms: int, span_ms: int,
                 history: HistoryProvider | None, worker: Executor | None, rule: str) -> None:
        self.bin_ms = bin_ms
        self.offset_ms = offset_ms
        self.span_ms = span_ms
        self.sums: dict[str, BinSums] = {point: {} for point in points}
        self.history = history
        self.worker = worker
        self.rule = rule
        self.live_from_ms: int | None = None
        self._seeding: Future[dict[str, BinSums]] | None = None

    def bin(self, ts_ms: int) -> int:
        return bin_of(ts_ms, self.bin_ms, self.offset_ms)

    def start(self, now_ms: int) -> None:
        """Begin at the first reading: read what the store kept before it."""
        if self.live_from_ms is not None:
            return
        self.live_from_ms = now_ms
        if self.history is None:
            return
        if self.worker is None:
            self._merge(self._read(now_ms))
        else:
            self._seeding = self.worker.submit(self._read, now_ms)

    def _read(self, now_ms: int) -> dict[str, BinSums]:
        assert self.history is not None
        return {point: history_bins(self.history, point, now_ms - self.span_ms, now_ms - 1,
                                    self.bin_ms, self.offset_ms) for point in self.sums}

    def _merge(self, stored: dict[str, BinSums]) -> None:
        for point, bins in stored.items():
            mine = self.sums[point]
            for b, (total, count) in bins.items():
                acc = mine.setdefault(b, [0.0, 0.0])
                acc[0] += total
                acc[1] += count
        log.info("history_binned", rule=self.rule,
                 bins={point: len(bins) for point, bins in stored.items()})

    @property
    def loading(self) -> bool:
        """True while the stored history is still being read (on the worker)."""
        if self._seeding is None:
            return False
        if not self._seeding.done():
            return True
        done, self._seeding = self._seeding, None
        try:
            self._merge(done.result())
        except Exception:  # the rule carries on with what it sees live
            log.exception("history_binning_failed", rule=self.rule)
        return False

    def add(self, reading: Reading) -> None:
        """A new reading of one of the points (an older one is the store's, not ours)."""
        series = self.sums.get(reading.key)
        if series is None or self.live_from_ms is None or reading.ts_ms < self.live_from_ms:
            return
        add_to_bins(series, (reading,), self.bin_ms, self.offset_ms)

    def mean(self, point: str, b: int) -> float | None:
        acc = self.sums[point].get(b)
        return acc[0] / acc[1] if acc and acc[1] else None

    def prune(self, now_ms: int) -> None:
        oldest = self.bin(now_ms - self.span_ms)
        for series in self.sums.values():
            for b in [b for b in series if b < oldest]:
                del series[b]
