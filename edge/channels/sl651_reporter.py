"""When the station reports, and what: the SL 651 reports committed to the outbox.

Every report is built once from the latest readings (a bad or missing reading is sent as
missing, never as a number) and committed as an ``sl651`` message; each centre's link
sends it in turn (edge/channels/sl651_link.py).

* **timed** (32H) on the clock, every ``timed_report_min`` (hourly by default);
* **added** (33H) when an alarm transition is committed (raised, escalated, de-escalated,
  cleared: one report per batch of transitions), and at each sample, every
  ``added.interval_min`` (5 minutes), while the rainfall in that period is at least
  ``added.rain_mm`` or the level moved by ``added.level_change_m`` (reservoir.md §5);
* **hourly** (34H) when twelve samples close: the twelve 5-minute rainfalls (F4H, from
  the cumulative PT, or the daily PD) and levels relative to ``level_base_m`` (F5H);
* **test** (30H) on command (``sl651_test``).
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Callable, Mapping

import structlog

from edge.channels.sl651_codec import Function
from edge.channels.sl651_messages import KIND, ReportValue, StoredReport, report_value
from edge.outbox import ChannelOutbox, Outbox
from edge.sl651_config import ElementMapConfig, Sl651Config
from vocab.model import Reading, now_ms

log = structlog.get_logger("edge.channels.sl651")

ALARMS_CHANNEL = "sl651-alarms"
ADDED_STATES = frozenset({"raised", "escalated", "de-escalated", "cleared"})
SAMPLES_PER_HOUR = 12
RAIN_ELEMENTS = ("PT", "PD")  # cumulative first; PD restarts at 08:00 each day
LEVEL_ELEMENTS = ("ZU", "Z")

Sample = tuple[int, float | None, float | None]  # (period index, rain counter, level)


def _period_rain(before: float | None, after: float | None) -> float | None:
    if before is None or after is None:
        return None
    # A counter that went back was reset (PD at 08:00): what it shows now fell since.
    return round(after - before if after >= before else after, 3)


class Reporter:
    """See the module docstring."""

    def __init__(self, config: Sl651Config, outbox: Outbox,
                 latest: Callable[[], Mapping[str, Reading]]) -> None:
        self.config = config
        self.outbox = outbox
        self._latest = latest
        self.samples: deque[Sample] = deque(maxlen=SAMPLES_PER_HOUR + 1)
        self.counts = {"timed": 0, "added": 0, "hourly": 0, "test": 0}

    # --- values -------------------------------------------------------------------------------

    def _value(self, item: ElementMapConfig) -> float | None:
        reading = self._latest().get(item.point)
        if reading is None or reading.value is None or reading.quality == "bad":
            return None
        return reading.value

    def snapshot(self, function: int, observed_ms: int | None = None) -> StoredReport:
        values = tuple(report_value(item, self._value(item)) for item in self.config.elements)
        return StoredReport(function, observed_ms or now_ms(), values)

    def _first(self, mnemonics: tuple[str, ...]) -> float | None:
        for mnemonic in mnemonics:
            for item in self.config.elements:
                if item.element == mnemonic:
                    value = self._value(item)
                    return None if value is None else value * item.scale
        return None

    async def _commit(self, report: StoredReport, what: str) -> int | None:
        seq = await self.outbox.enqueue(KIND, report.payload)
        self.counts[what] += 1
        log.debug("sl651_report_queued", report=what, seq=seq)
        return seq

    async def test_report(self) -> int | None:
        return await self._commit(self.snapshot(Function.TEST), "test")

    # --- the clock ----------------------------------------------------------------------------

    async def run_timed(self) -> None:
        period = max(1, round(self.config.timed_report_min * 60_000))
        while True:
            boundary = await _sleep_to_next(period)
            await self._commit(self.snapshot(Function.TIMED, boundary), "timed")

    async def run_samples(self) -> None:
        period = max(1, round(self.config.added.interval_min * 60_000))
        while True:
            boundary = await _sleep_to_next(period)
            await self.sample(boundary // period, boundary)

    async def sample(self, index: int, boundary_ms: int) -> None:
        """One sample: an added report while it rains or the level moves; the hourly
        report when twelve samples close an hour."""
        rain, level = self._first(RAIN_ELEMENTS), self._first(LEVEL_ELEMENTS)
        previous = self.samples[-1] if self.samples else None
        self.samples.append((index, rain, level))
        if previous is not None and previous[0] == index - 1:
            fell = _period_rain(previous[1], rain)
            moved = None if level is None or previous[2] is None else abs(level - previous[2])
            if ((fell is not None and fell >= self.config.added.rain_mm)
                    or (moved is not None and moved >= self.config.added.level_change_m)):
                await self._commit(self.snapshot(Function.ADDED, boundary_ms), "added")
        if self.config.hourly and index % SAMPLES_PER_HOUR == 0:
            await self._commit(self._hourly(index, boundary_ms), "hourly")

    def _hourly(self, index: int, boundary_ms: int) -> StoredReport:
        by_index = {i: (r, z) for i, r, z in self.samples}
        first = index - SAMPLES_PER_HOUR + 1
        rain5: list[float | None] = []
        level5: list[float | None] = []
        base = self.config.level_base_m
        for i in range(first, index + 1):
            now, before = by_index.get(i, (None, None)), by_index.get(i - 1, (None, None))
            rain5.append(_period_rain(before[0], now[0]))
            level5.append(None if base is None or now[1] is None else round(now[1] - base, 2))
        period = max(1, round(self.config.added.interval_min * 60_000))
        values: tuple[ReportValue, ...] = self.snapshot(Function.HOURLY, boundary_ms).values
        return StoredReport(Function.HOURLY, boundary_ms, values, tuple(rain5),
                            tuple(level5) if base is not None else None,
                            boundary_ms - (SAMPLES_PER_HOUR - 1) * period)

    # --- alarm transitions --------------------------------------------------------------------

    async def run_alarms(self, channel: ChannelOutbox) -> None:
        """One added report per batch of alarm transitions, committed before the batch is
        acknowledged: a restart in between sends it again rather than never."""
        while True:
            batch = await channel.next_batch(50)
            if not batch:
                await channel.wait(5.0)
                continue
            states = set()
            for message in batch:
                try:
                    states.add(json.loads(message.payload)["alarm"]["state"])
                except (ValueError, KeyError, TypeError):
                    log.warning("sl651_alarm_unreadable", seq=message.seq)
            if states & ADDED_STATES:
                await self._commit(self.snapshot(Function.ADDED), "added")
            channel.acknowledge(m.seq for m in batch)


async def _sleep_to_next(period_ms: int) -> int:
    """Sleep until the next multiple of ``period_ms`` on the clock; returns it."""
    now = now_ms()
    boundary = (now // period_ms + 1) * period_ms
    await asyncio.sleep((boundary - now) / 1000)
    return boundary
