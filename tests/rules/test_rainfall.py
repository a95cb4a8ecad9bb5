"""Rainfall accumulation: window edges, the 08:00 day, events, intensity, CMA signals."""

from __future__ import annotations

import pytest

from rules.rainfall import (
    DEFAULT_WINDOWS_S,
    DailyRainfall,
    RainfallDay,
    RainfallEvent,
    RainfallEvents,
    RainfallWindows,
    intensity_mm_per_h,
    rainfall_day_bounds,
    rainstorm_signal,
)

S = 1000  # ms per second
MIN = 60 * S
HOUR = 60 * MIN
DAY = 24 * HOUR

# 2024-07-01 08:00 Beijing time = 2024-07-01 00:00 UTC. Worked by hand: 2024-01-01
# 00:00 UTC is 1 704 067 200 s; January–June 2024 (leap year) is 182 days = 15 724 800 s.
JULY_1_0800 = (1_704_067_200 + 182 * 86_400) * S
assert JULY_1_0800 == 1_719_792_000_000

# --- window sums ----------------------------------------------------------------------


def test_window_edges_are_half_open() -> None:
    windows = RainfallWindows([3600])
    t = JULY_1_0800 + 5 * HOUR
    windows.add(t - HOUR, 1.0)  # exactly at t − W: outside (t − W, t]
    windows.add(t - HOUR + 1, 2.0)  # 1 ms later: inside
    assert windows.sums(t - 1) == {3600: 3.0}  # (t − 1 h − 1 ms, t − 1 ms]: 1 + 2
    windows.add(t, 4.0)  # exactly at t: inside
    assert windows.sums(t) == {3600: 6.0}
    windows.add(t + 1, 8.0)  # after t
    # At t + 1 ms the 2.0 stamped t − W + 1 ms sits exactly on the window start: out.
    assert windows.sums(t + 1) == {3600: 12.0}  # 4 + 8


def test_all_standard_windows() -> None:
    windows = RainfallWindows(DEFAULT_WINDOWS_S)
    t = JULY_1_0800
    # One 1-mm increment at the end of each hour back to 30 h before t.
    for hours_back in range(30):
        windows.add(t - hours_back * HOUR, 1.0)
    # (t − W, t] holds the increments at t, t − 1 h, …, t − (W − 1) h: W of them.
    assert windows.sums(t) == {3600: 1.0, 10800: 3.0, 21600: 6.0, 43200: 12.0, 86400: 24.0}


def test_cma_orange_signal_at_exactly_fifty_mm_in_three_hours() -> None:
    windows = RainfallWindows(DEFAULT_WINDOWS_S)
    t0 = JULY_1_0800
    # 36 five-minute counts in 3 h of 0.2-mm tips: 34 × 7 tips (1.4 mm) and 2 × 6 tips
    # (1.2 mm) = 250 tips = 47.6 + 2.4 = 50.0 mm.
    counts = [1.4] * 34 + [1.2] * 2
    for i, mm in enumerate(counts, start=1):
        windows.add(t0 + i * 5 * MIN, mm)
    end = t0 + 3 * HOUR
    sums = windows.sums(end)
    assert sums[10800] == 50.0  # exactly, so "≥ 50 mm" holds
    assert sums[3600] == pytest.approx(10 * 1.4 + 2 * 1.2)  # the last 12 counts: 16.4
    assert rainstorm_signal(sums) == "orange"
    # 5 min later the first count has left the 3-h window: 48.6 mm, but the 6-h window
    # still has all 50 mm, which is yellow.
    later = windows.sums(end + 5 * MIN)
    assert later[10800] == pytest.approx(48.6)
    assert rainstorm_signal(later) == "yellow"


@pytest.mark.parametrize(
    ("sums", "signal"),
    [
        ({10800: 100.0, 21600: 100.0, 43200: 100.0}, "red"),
        ({10800: 99.9, 21600: 99.9, 43200: 99.9}, "orange"),
        ({10800: 49.9, 21600: 50.0, 43200: 50.0}, "yellow"),
        ({10800: 30.0, 21600: 49.9, 43200: 50.0}, "blue"),
        ({10800: 30.0, 21600: 40.0, 43200: 49.9}, None),
    ],
)
def test_rainstorm_signal_thresholds(sums: dict[int, float], signal: str | None) -> None:
    assert rainstorm_signal(sums) == signal


def test_rainstorm_signal_needs_its_windows() -> None:
    with pytest.raises(ValueError, match="10800"):
        rainstorm_signal({3600: 10.0})


def test_out_of_order_and_duplicate_increments() -> None:
    windows = RainfallWindows([3600, 86400])
    t = JULY_1_0800
    windows.add(t, 1.0)
    windows.add(t - 10 * MIN, 2.0)  # late, still inside both windows
    windows.add(t, 0.5)  # same stamp: a second increment, counted
    assert windows.sums(t) == {3600: 3.5, 86400: 3.5}
    # Older than the longest window before the newest stamp: can never count again.
    assert windows.add(t - DAY, 9.0) is False
    assert windows.add(t - DAY + 1, 4.0) is True
    assert windows.sums(t) == {3600: 3.5, 86400: 7.5}


def test_memory_is_bounded_by_the_longest_window() -> None:
    windows = RainfallWindows([3600, 86400])
    t0 = JULY_1_0800
    for i in range(1, 3 * 288 + 1):  # three days of 5-min counts
        windows.add(t0 + i * 5 * MIN, 0.5)
    assert len(windows) == 288  # one day of 5-min counts
    assert windows.sums(t0 + 3 * DAY) == {3600: 6.0, 86400: 144.0}
    # Dry counts are not stored but still move time on.
    windows.add(t0 + 4 * DAY, 0.0)
    assert len(windows) == 0


def test_invalid_increments_are_rejected() -> None:
    windows = RainfallWindows([3600])
    with pytest.raises(ValueError):
        windows.add(JULY_1_0800, -0.2)
    with pytest.raises(ValueError):
        windows.add(JULY_1_0800, float("nan"))
    with pytest.raises(TypeError):
        windows.add(1.5, 0.2)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        RainfallWindows([0])


def test_intensity_is_five_minute_sum_times_twelve() -> None:
    assert intensity_mm_per_h(1.5) == 18.0
    assert intensity_mm_per_h(2.0, interval_s=600) == 12.0


# --- the rainfall day -----------------------------------------------------------------


def test_rainfall_day_edges_at_eight_local() -> None:
    previous = (JULY_1_0800 - DAY, JULY_1_0800)
    following = (JULY_1_0800, JULY_1_0800 + DAY)
    assert rainfall_day_bounds(JULY_1_0800 - 1 * S) == previous  # 07:59:59
    assert rainfall_day_bounds(JULY_1_0800) == previous  # 08:00:00 ends its day
    assert rainfall_day_bounds(JULY_1_0800 + 1) == following  # 08:00:00.001
    assert rainfall_day_bounds(JULY_1_0800 + 1 * S) == following  # 08:00:01
    assert rainfall_day_bounds(JULY_1_0800 + DAY - 1) == following  # 07:59:59.999 next day


def test_rainfall_day_in_other_zones_and_hours() -> None:
    # 2024-07-01 00:00 UTC is midnight in UTC: with start_hour 0 it ends a UTC day.
    assert rainfall_day_bounds(JULY_1_0800, tz="UTC", start_hour=0) == (
        JULY_1_0800 - DAY,
        JULY_1_0800,
    )
    # Europe/Berlin, 2024-03-31, clocks go 02:00 → 03:00: the 08:00–08:00 day that
    # spans it lasts 23 h. 2024-03-31 08:00 CEST = 06:00 UTC.
    march_31_0800 = (1_704_067_200 + 90 * 86_400 + 6 * 3600) * S
    start, end = rainfall_day_bounds(march_31_0800, tz="Europe/Berlin")
    assert end == march_31_0800
    assert end - start == 23 * HOUR
    with pytest.raises(ValueError):
        rainfall_day_bounds(JULY_1_0800, start_hour=24)


def test_rainfall_day_rolls_over_at_eight() -> None:
    day = RainfallDay()
    assert day.current is None
    assert day.add(JULY_1_0800 - 5 * MIN, 1.0) is None  # 07:55
    assert day.add(JULY_1_0800, 0.5) is None  # 08:00 still the old day
    closed = day.add(JULY_1_0800 + 5 * MIN, 2.0)  # 08:05 starts the new day
    assert closed == DailyRainfall(JULY_1_0800 - DAY, JULY_1_0800, 1.5, 1.5)
    current = day.current
    assert current is not None
    assert (current.start_ms, current.end_ms, current.total_mm) == (
        JULY_1_0800,
        JULY_1_0800 + DAY,
        2.0,
    )
    # The sliding hour ending 08:05 reaches back over 07:55 and 08:00: 1 + 0.5 + 2.
    assert current.max_1h_mm == 3.5


def test_rainfall_day_roll_from_the_clock_and_late_rain() -> None:
    day = RainfallDay()
    day.add(JULY_1_0800 - 3 * HOUR, 4.0)
    assert day.roll(JULY_1_0800 - 1) is None  # 07:59:59.999: the day is not complete
    closed = day.roll(JULY_1_0800)  # all data through 08:00 is in
    assert closed == DailyRainfall(JULY_1_0800 - DAY, JULY_1_0800, 4.0, 4.0)
    current = day.current
    assert current is not None
    assert (current.start_ms, current.total_mm) == (JULY_1_0800, 0.0)
    # An increment for the closed day cannot change it.
    assert day.add(JULY_1_0800 - 10 * MIN, 0.6) is None
    assert day.late_mm == 0.6
    assert day.current == DailyRainfall(JULY_1_0800, JULY_1_0800 + DAY, 0.0, 0.0)


def test_rainfall_day_maximum_hour() -> None:
    day = RainfallDay()
    t0 = JULY_1_0800
    # 5-min counts over two hours: 1 mm each, except a burst of 3 × 4 mm in hour two.
    amounts = [1.0] * 12 + [1.0] * 4 + [4.0] * 3 + [1.0] * 5
    for i, mm in enumerate(amounts, start=1):
        day.add(t0 + i * 5 * MIN, mm)
    current = day.current
    assert current is not None
    assert current.total_mm == 12 + 4 + 12 + 5
    # The best hour holds the burst (12) and 9 one-mm counts: 21 mm.
    assert current.max_1h_mm == 21.0
    assert intensity_mm_per_h(4.0) == 48.0


def test_rainfall_day_skipped_days_are_not_reported_as_zero() -> None:
    day = RainfallDay()
    day.add(JULY_1_0800 + HOUR, 3.0)
    closed = day.add(JULY_1_0800 + 3 * DAY + HOUR, 1.0)
    assert closed == DailyRainfall(JULY_1_0800, JULY_1_0800 + DAY, 3.0, 3.0)
    current = day.current
    assert current is not None
    assert current.start_ms == JULY_1_0800 + 3 * DAY


# --- events -----------------------------------------------------------------------------


def test_event_ends_after_the_dry_gap() -> None:
    events = RainfallEvents(dry_gap_s=6 * 3600)
    t0 = JULY_1_0800
    first = events.add(t0, 2.0)
    assert first.current == RainfallEvent(t0, t0, 2.0)
    assert first.ended is None
    events.add(t0 + 5 * MIN, 3.0)
    # Rain exactly 6 h after the last wet count: the gap was not exceeded.
    same = events.add(t0 + 5 * MIN + 6 * HOUR, 1.0)
    assert same.current == RainfallEvent(t0, t0 + 5 * MIN + 6 * HOUR, 6.0)
    # Dry counts keep time moving; 6 h and 1 ms after the last rain the event ends.
    last_rain = t0 + 5 * MIN + 6 * HOUR
    assert events.add(last_rain + 6 * HOUR, 0.0).ended is None
    update = events.advance(last_rain + 6 * HOUR + 1)
    assert update.ended == RainfallEvent(t0, last_rain, 6.0)
    assert update.current is None
    assert events.current is None


def test_new_rain_after_the_gap_ends_the_old_event_and_opens_a_new_one() -> None:
    events = RainfallEvents(dry_gap_s=3600)
    t0 = JULY_1_0800
    events.add(t0, 1.0)
    update = events.add(t0 + 2 * HOUR, 0.4)
    assert update.ended == RainfallEvent(t0, t0, 1.0)
    assert update.current == RainfallEvent(t0 + 2 * HOUR, t0 + 2 * HOUR, 0.4)


def test_late_increments_join_the_open_event_or_are_set_aside() -> None:
    events = RainfallEvents(dry_gap_s=3600)
    t0 = JULY_1_0800
    events.add(t0, 1.0)
    events.add(t0 + 30 * MIN, 1.0)
    late = events.add(t0 - 20 * MIN, 0.5)  # within a gap of the start: joins, moves start
    assert late.current == RainfallEvent(t0 - 20 * MIN, t0 + 30 * MIN, 2.5)
    assert late.ended is None
    events.add(t0 - 3 * HOUR, 0.7)  # too early for this event
    assert events.late_mm == 0.7
    current = events.current
    assert current is not None
    assert current.total_mm == 2.5


def test_dry_gap_must_be_positive() -> None:
    with pytest.raises(ValueError):
        RainfallEvents(dry_gap_s=0)
