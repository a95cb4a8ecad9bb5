"""The reporter's cadence on a real store and outbox: added reports while it rains or the
level moves, and the hourly report's twelve 5-minute values, decoded by the test centre's
own code (tests/channels/sl651_centre.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from edge.channels.sl651_messages import KIND, StoredReport, frame_for
from edge.channels.sl651_reporter import Reporter
from edge.outbox import Outbox
from edge.sl651_config import Sl651Config
from edge.store import Store, StoreWorker
from simulator.sl651_centre import decode_uplink
from vocab.model import Quality, Reading

PERIOD_MS = 300_000
HOUR_START = 1_764_900_000_000 // 3_600_000 * 3_600_000  # an hour on the clock


def config(**overrides: Any) -> Sl651Config:
    return Sl651Config.model_validate({
        "station_address": "0033080001", "level_base_m": 100.0,
        "centres": [{"address": 1, "host": "127.0.0.1", "port": 5001}],
        "elements": [{"point": "level-1/water_level", "element": "ZU"},
                     {"point": "rain/rain_total", "element": "PT"}], **overrides})


def reading(key: str, value: float | None, quality: Quality = "good") -> Reading:
    device, point = key.split("/")
    return Reading(device, point, 0, value, "", quality)


async def samples(tmp: Path, series: list[tuple[float | None, float | None]],
                  **overrides: Any) -> list[StoredReport]:
    """Feed one sample per (rain counter, level), ending on the hour; the reports queued."""
    store = StoreWorker(Store(tmp / "edge.db"))
    outbox = Outbox(store)
    await outbox.open({"sl651-centre-1": (KIND,)})
    latest: dict[str, Reading] = {}
    reporter = Reporter(config(**overrides), outbox, lambda: latest)
    last = HOUR_START // PERIOD_MS
    for index, (rain, level) in enumerate(series, start=last - len(series) + 1):
        latest["rain/rain_total"] = reading("rain/rain_total", rain)
        latest["level-1/water_level"] = reading("level-1/water_level", level)
        await reporter.sample(index, index * PERIOD_MS)
    batch = await outbox.channel("sl651-centre-1").next_batch(100)
    store.close()
    return [StoredReport.from_payload(m.payload) for m in batch]


def test_added_reports_while_it_rains_or_the_level_moves(tmp_path: Path) -> None:
    series = [(10.0, 120.0), (10.5, 120.005),  # neither: 0.5 mm, 5 mm of level
              (11.5, 120.005),  # 1 mm of rain
              (11.5, 120.02),  # 1.5 cm of level
              (11.5, 120.02), (11.5, None)]  # nothing; a missing level changes nothing
    reports = asyncio.run(samples(tmp_path, series, hourly=False))
    assert [(r.function, r.values[0].value) for r in reports] == [(0x33, 120.005),
                                                                   (0x33, 120.02)]


def test_the_hourly_report_carries_twelve_five_minute_values(tmp_path: Path) -> None:
    # 13 samples: the one before the hour and the hour's twelve; the daily counter
    # restarts once (PD at 08:00), one rain sample is missing.
    rain = [5.0, 5.0, 5.5, 6.0, 6.0, None, 7.0, 7.0, 0.4, 0.4, 0.6, 0.6, 0.6]
    level = [120.0 + i / 100 for i in range(13)]
    reports = asyncio.run(samples(tmp_path, list(zip(rain, level, strict=True)),
                                  added={"rain_mm": 100, "level_change_m": 10}))
    hourly = [r for r in reports if r.function == 0x34][-1]  # the first sample closes one too
    frame = frame_for(hourly, config(), 1, 7, HOUR_START, 0)
    decoded = decode_uplink(frame)
    assert list(decoded.values["DRP"]) == [0.0, 0.5, 0.5, 0.0, None, None, 0.0, 0.4, 0.0,
                                           0.2, 0.0, 0.0]
    assert [round(v, 2) for v in decoded.values["DRZ1"]] == [
        round(20.01 + i / 100, 2) for i in range(12)]
    assert decoded.values["ZU"] == 120.12 and decoded.values["PT"] == 0.6
    first = decoded.observed_at[0xF4]
    assert first is not None and int(first.timestamp() * 1000) == HOUR_START - 11 * PERIOD_MS
