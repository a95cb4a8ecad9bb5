"""An interval's GNSS epochs are averaged as they arrive, exactly as a list of them was."""

from __future__ import annotations

import random
import statistics
import sys

from drivers.gnss import POSITION_FIELDS, Epoch, EpochAverager, average_epochs
from drivers.nmea import GnssDisplacement


def listed_mean(epochs: list[Epoch]) -> tuple[dict[str, float | None], int, int] | None:
    """The interval mean computed from the whole list (the driver's former way)."""
    good = [e for e in epochs if not e.displacement.flags]
    used = good or epochs
    if not used:
        return None
    values: dict[str, float | None] = {}
    for name in POSITION_FIELDS:
        samples = [getattr(e.displacement, name) for e in used]
        values[name] = None if None in samples else statistics.fmean(samples)
    values["fix_quality"] = float(used[-1].displacement.fix_quality)
    satellites = [e.displacement.satellites for e in used
                  if e.displacement.satellites is not None]
    hdops = [e.displacement.hdop for e in used if e.displacement.hdop is not None]
    values["satellites"] = float(min(satellites)) if satellites else None
    values["hdop"] = max(hdops) if hdops else None
    return values, len(used), used[-1].ts_ms


def epoch(rng: random.Random, i: int, rtk_share: float) -> Epoch:
    axis = None if rng.random() < 0.05 else rng.uniform(-1e3, 1e3)
    return Epoch(GnssDisplacement(
        rng.gauss(0, 5), rng.gauss(1e5, 3), rng.uniform(-1, 1) * 10 ** rng.randint(-3, 6),
        axis, axis, rng.gauss(0, 1), rng.choice([1, 4, 5]), rng.choice([None, 8, 12]),
        rng.choice([None, 0.7, 1.2]), () if rng.random() < rtk_share else ("fix_not_rtk",)),
        1_700_000_000_000 + 1000 * i)


def test_streamed_mean_equals_the_mean_of_the_list() -> None:
    rng = random.Random(1)
    for _ in range(200):
        epochs = [epoch(rng, i, rng.choice([0.0, 0.7, 1.0])) for i in range(rng.randint(0, 300))]
        mean = average_epochs(epochs)
        expected = listed_mean(epochs)
        if expected is None:
            assert mean is None
        else:
            assert mean is not None
            assert (mean.values, mean.epochs, mean.ts_ms) == expected


def test_a_day_of_epochs_holds_no_list_of_them() -> None:
    rng = random.Random(2)
    averager = EpochAverager()
    for i in range(86_400):
        averager.add(epoch(rng, i, 1.0))
    assert len(averager) == 86_400
    held = sum(sys.getsizeof(total.partials) for group in (averager._good, averager._other)
               for total in group.sums.values())
    assert held < 10_000
